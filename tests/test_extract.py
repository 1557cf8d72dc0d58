"""Extracting archives safely: malicious and broken archives."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from airflow_s3_publisher.exceptions import FetchError, UnsafeArchiveError
from airflow_s3_publisher.extract import extract_tar_gz
from airflow_s3_publisher.sources import SourceEntry, collect_source
from tests.archive_support import (
    TAR_READERS,
    CountingReader,
    MiB,
    archive,
    assert_only_dest,
    build_archive,
    extract,
    make_tree,
    member,
    snapshot,
)

# --------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A directory holding only the extraction destination ``box/dest``; tests check nothing else appears."""
    root = tmp_path / "box"
    (root / "dest").mkdir(parents=True)
    return root


# --------------------------------------------------------------------------------------------------
# extract_tar_gz: malicious and broken archives


def test_extract_refuses_absolute_member(box: Path, extractor: str) -> None:
    target = box / "evil"
    data = build_archive(member(str(target), data=b"pwned"))
    with pytest.raises(UnsafeArchiveError, match="absolute") as err:
        extract(data, box / "dest")
    assert str(target) in str(err.value)
    assert not target.exists()
    assert_only_dest(box)


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "..", "ok/../../../evil", "..\\evil", "a/..\\..\\evil"])
def test_extract_refuses_dotdot(box: Path, name: str, extractor: str) -> None:
    data = build_archive(member("fine.txt", data=b"ok"), member(name, data=b"pwned"))
    with pytest.raises(UnsafeArchiveError, match=r"\.\.") as err:
        extract(data, box / "dest")
    assert repr(name) in str(err.value)
    assert_only_dest(box)


@pytest.mark.parametrize("target", ["../outside", "../../etc", "a/../../x", "/etc/passwd"])
def test_extract_refuses_symlink_escape(box: Path, target: str, extractor: str) -> None:
    data = build_archive(
        member("link", tarfile.SYMTYPE, linkname=target),
        member("data.txt", data=b"never written"),
        member("link/evil", data=b"pwned"),
    )
    with pytest.raises(UnsafeArchiveError, match="symlink") as err:
        extract(data, box / "dest")
    assert "'link'" in str(err.value)
    assert_only_dest(box)
    assert os.listdir(box / "dest") == []  # refused at the link, before later members


def test_extract_refuses_symlink_chain_escape(box: Path, extractor: str) -> None:
    # Each target looks inside on its own; together "m" leads to box/escape.
    data = build_archive(
        member("l", tarfile.SYMTYPE, linkname="."),
        member("m", tarfile.SYMTYPE, linkname="l/../escape"),
    )
    with pytest.raises(UnsafeArchiveError, match="outside the destination") as err:
        extract(data, box / "dest")
    assert "'m'" in str(err.value)
    assert_only_dest(box)
    assert os.listdir(box / "dest") == []  # the links were removed again


def test_extract_refuses_writing_through_symlink(box: Path, extractor: str) -> None:
    data = build_archive(
        member("sub", tarfile.DIRTYPE, mode=0o755),
        member("s", tarfile.SYMTYPE, linkname="sub"),
        member("s/f", data=b"through the link"),
    )
    with pytest.raises(UnsafeArchiveError, match="through the symlink"):
        extract(data, box / "dest")
    assert_only_dest(box)


def test_extract_keeps_symlinks_inside(tmp_path: Path, extractor: str) -> None:
    data = build_archive(
        member("d", tarfile.DIRTYPE, mode=0o755),
        member("d/f.txt", data=b"content"),
        member("d/alias", tarfile.SYMTYPE, linkname="f.txt"),
        member("up", tarfile.SYMTYPE, linkname="d/../d/f.txt"),
    )
    dest = tmp_path / "dest"
    stats = extract(data, dest)
    assert os.readlink(dest / "d" / "alias") == "f.txt"
    assert (dest / "d" / "alias").read_bytes() == b"content"
    assert (dest / "up").read_bytes() == b"content"
    assert stats.files == 3


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd", "never-seen.txt", "later.txt", "d"])
def test_extract_refuses_hardlink_escape(box: Path, target: str, extractor: str) -> None:
    outside = box.parent / "outside.txt"
    data = build_archive(
        member("d", tarfile.DIRTYPE, mode=0o755),
        member("h", tarfile.LNKTYPE, linkname=target),
        member("later.txt", data=b"x"),
    )
    with pytest.raises(UnsafeArchiveError, match="hard link") as err:
        extract(data, box / "dest")
    assert "'h'" in str(err.value)
    assert not outside.exists()
    assert_only_dest(box)


def test_extract_allows_hardlink_to_earlier_member(tmp_path: Path, extractor: str) -> None:
    data = build_archive(member("a.txt", data=b"shared"), member("b.txt", tarfile.LNKTYPE, linkname="a.txt"))
    dest = tmp_path / "dest"
    extract(data, dest)
    assert (dest / "b.txt").read_bytes() == b"shared"
    assert os.stat(dest / "a.txt").st_ino == os.stat(dest / "b.txt").st_ino


@pytest.mark.parametrize(
    ("kind", "word"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_extract_refuses_special_files(box: Path, kind: bytes, word: str, extractor: str) -> None:
    data = build_archive(member("special", kind))
    with pytest.raises(UnsafeArchiveError, match=word) as err:
        extract(data, box / "dest")
    assert "'special'" in str(err.value)
    assert os.listdir(box / "dest") == []
    assert_only_dest(box)


def test_extract_strips_setuid_setgid_sticky(tmp_path: Path, extractor: str) -> None:
    data = build_archive(
        member("suid", data=b"#!/bin/sh\n", mode=0o4755),
        member("sgid", data=b"x", mode=0o2750),
        member("none", data=b"x", mode=0o000),
        member("sticky", tarfile.DIRTYPE, mode=0o1777),
        member("locked", tarfile.DIRTYPE, mode=0o500),
        member("locked/inner", data=b"x", mode=0o444),
    )
    dest = tmp_path / "dest"
    extract(data, dest)

    def mode(name: str) -> int:
        return stat.S_IMODE(os.stat(dest / name).st_mode)

    assert mode("suid") == 0o755
    assert mode("sgid") == 0o750
    assert mode("none") == 0o600  # at least owner read/write
    assert mode("sticky") == 0o777
    assert mode("locked") == 0o700
    assert mode("locked/inner") == 0o644
    assert (dest / "locked" / "inner").read_bytes() == b"x"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_extract_keeps_file_modes_whatever_the_umask(tmp_path: Path, extractor: str, umask: int) -> None:
    modes = {"rw-r--r--": 0o644, "rw-rw-rw-": 0o666, "rwxrwxr-x": 0o775, "rw-r-----": 0o640}
    data = build_archive(*(member(name, data=b"x", mode=mode) for name, mode in modes.items()))
    dest = tmp_path / "dest"
    old = os.umask(umask)
    try:
        extract(data, dest)
    finally:
        os.umask(old)
    assert {name: stat.S_IMODE(os.stat(dest / name).st_mode) for name in modes} == modes


def test_extract_bomb_stops_at_max_bytes(box: Path, extractor: str) -> None:
    data = build_archive(*(member(f"zeros{i}", data=bytes(4 * MiB)) for i in range(4)))
    assert len(data) < 100_000  # highly compressible
    limit = 10 * MiB
    with pytest.raises(UnsafeArchiveError, match="max_bytes") as err:
        extract(data, box / "dest", max_bytes=limit)
    assert str(limit) in str(err.value)
    written = sum(p.stat().st_size for p in (box / "dest").iterdir())
    assert written <= limit
    assert_only_dest(box)


def test_extract_bomb_single_member(box: Path, extractor: str) -> None:
    data = build_archive(member("huge", data=bytes(64 * MiB)))
    with pytest.raises(UnsafeArchiveError, match="max_bytes"):
        extract(data, box / "dest", max_bytes=MiB)
    assert sum(p.stat().st_size for p in (box / "dest").iterdir()) <= MiB


def test_extract_counts_written_bytes_not_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extractor: str
) -> None:
    # A member whose data runs past what its header declares: the limit holds on the bytes written.
    data = build_archive(member("small", data=b"x"))
    monkeypatch.setattr(TAR_READERS[extractor], "extractfile", lambda self, info: io.BytesIO(bytes(8 * MiB)))
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match="max_bytes"):
        extract(data, dest, max_bytes=4 * MiB)
    assert (dest / "small").stat().st_size <= 4 * MiB


def test_extract_refuses_member_shorter_than_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extractor: str
) -> None:
    data = build_archive(member("f", data=b"12345"))
    monkeypatch.setattr(TAR_READERS[extractor], "extractfile", lambda self, info: io.BytesIO(b"12"))
    with pytest.raises(FetchError, match="truncated"):
        extract(data, tmp_path / "dest")


def test_extract_stops_at_max_members(box: Path, extractor: str) -> None:
    data = build_archive(*(member(f"f{i}", data=b"") for i in range(20)))
    with pytest.raises(UnsafeArchiveError, match="max_members") as err:
        extract(data, box / "dest", max_members=5)
    assert "5" in str(err.value)
    assert len(os.listdir(box / "dest")) <= 5


def test_extract_refuses_huge_pax_header(box: Path, extractor: str) -> None:
    data = build_archive(member("f", data=b"x", pax_headers={"comment": "x" * (20 * MiB)}))
    with pytest.raises(UnsafeArchiveError, match="decompression bomb"):
        extract(data, box / "dest")


def test_extract_refuses_unsafe_archive_built_by_our_writer(tmp_path: Path, extractor: str) -> None:
    # Entries are plain data, so a caller could hand write_tar_gz a hostile relpath; extraction refuses it.
    evil = tmp_path / "f"
    evil.write_text("x")
    st_ = os.stat(evil)
    entry = SourceEntry(path=evil, relpath="../evil", size=st_.st_size, mtime=st_.st_mtime, mode=0o644, is_dir=False)
    with pytest.raises(UnsafeArchiveError):
        extract(archive([entry]), tmp_path / "dest")
    assert not (tmp_path / "evil").exists()


def _complete_archive(tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    make_tree(src)
    return archive(collect_source(src))


@pytest.mark.parametrize("cut", [1, 8, 100, 5000, "half", "header"])
def test_extract_refuses_truncated_archive(tmp_path: Path, backend: str, cut: int | str, extractor: str) -> None:
    data = _complete_archive(tmp_path)
    if cut == "half":
        truncated = data[: len(data) // 2]
    elif cut == "header":
        truncated = data[:5]
    else:
        assert isinstance(cut, int)
        truncated = data[:-cut]
    with pytest.raises(FetchError, match="truncated|corrupt|not valid gzip"):
        extract(truncated, tmp_path / "dest")


@pytest.mark.parametrize("failure", ["truncated", "unsafe", "complete"])
def test_extract_leaves_no_inflating_thread_behind(tmp_path: Path, extractor: str, failure: str) -> None:
    # Gunzip runs ahead in a thread of its own; whatever the outcome, that thread has ended on return.
    data = _complete_archive(tmp_path)
    if failure == "truncated":
        data = data[: len(data) // 2]
    elif failure == "unsafe":
        data = _unsafe_archive()
    before = {t.ident for t in threading.enumerate()}
    try:
        extract(data, tmp_path / "dest")
    except (FetchError, UnsafeArchiveError):
        assert failure != "complete"
    else:
        assert failure == "complete"
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []


def _unsafe_archive() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        # More after the refused member than is ever inflated ahead: the thread would wait to hand it over.
        for name, data in (("ok.txt", b"ok"), ("../evil.txt", b"evil"), ("after.bin", os.urandom(8 << 20))):
            info, payload = member(name, data=data)
            tar.addfile(info, io.BytesIO(payload or b""))
    return gzip.compress(raw.getvalue())


def test_extract_refuses_bad_crc(tmp_path: Path, backend: str, extractor: str) -> None:
    data = bytearray(_complete_archive(tmp_path))
    data[-6] ^= 0xFF  # inside the CRC-32 of the gzip trailer
    with pytest.raises(FetchError):
        extract(bytes(data), tmp_path / "dest")


@pytest.mark.parametrize("data", [b"", b"not gzip at all", gzip.compress(b"not a tar archive, just text" * 30)])
def test_extract_refuses_non_archives(tmp_path: Path, data: bytes, extractor: str) -> None:
    with pytest.raises(FetchError):
        extract(data, tmp_path / "dest")


def test_extract_refuses_tar_without_end_marker(tmp_path: Path, extractor: str) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info, payload = member("a.txt", data=b"hello")
        tar.addfile(info, io.BytesIO(payload or b""))
    body = raw.getvalue()
    without_end = body[:1024]  # header + one data block, no zero blocks
    with pytest.raises(FetchError, match="corrupt or truncated"):
        extract(gzip.compress(without_end), tmp_path / "dest")


def test_extract_refuses_corrupt_header_inside_valid_gzip(tmp_path: Path, extractor: str) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("a.txt", "b.txt"):
            info, payload = member(name, data=b"hello")
            tar.addfile(info, io.BytesIO(payload or b""))
    body = bytearray(raw.getvalue())
    body[1024 + 10] ^= 0x55  # inside the name of the second header: its checksum no longer matches
    with pytest.raises(FetchError, match="bad tar header"):
        extract(gzip.compress(bytes(body)), tmp_path / "dest")


def test_extract_reads_stream_to_its_end(tmp_path: Path, backend: str, extractor: str) -> None:
    data = _complete_archive(tmp_path) + b"\0" * 3000  # trailing bytes after the gzip member
    reader = CountingReader(data, max_read=1000)
    (tmp_path / "dest").mkdir()
    extract_tar_gz(reader, tmp_path / "dest")
    assert reader.consumed == len(data)


def test_extract_foreign_archive_with_big_record_padding(tmp_path: Path, extractor: str) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    expected = make_tree(src)
    path = tmp_path / "b.tar.gz"
    subprocess.run(["tar", "-b", "2048", "-czf", str(path), "-C", str(src), "."], check=True, capture_output=True)
    reader = CountingReader(path.read_bytes())
    (tmp_path / "dest").mkdir()
    extract_tar_gz(reader, tmp_path / "dest")
    assert snapshot(tmp_path / "dest") == expected
    assert reader.consumed == path.stat().st_size
