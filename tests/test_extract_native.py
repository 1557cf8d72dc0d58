"""The libarchive extractor (extract_native): hostile archives on both extractors, and the fallback.

Every test that takes ``extract`` runs once with Python's tarfile front end and once with libarchive's;
both put the same guard (extract_module.ExtractGuard) behind their parser, so both must refuse, accept and count
alike. The archives are built here, by tarfile, by GNU tar or by hand, never by the code under test.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import airflow_s3_publisher.extract as extract_module
from airflow_s3_publisher import extract_native
from airflow_s3_publisher.exceptions import FetchError, UnsafeArchiveError
from airflow_s3_publisher.extract import ExtractStats
from tests.archive_support import member
from tests.support import extractor_function

MiB = 1 << 20
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
Extract = Callable[..., ExtractStats]


@pytest.fixture(params=["tarfile", "libarchive"])
def extract(request: pytest.FixtureRequest) -> Extract:
    """Each extractor in turn (libarchive's is skipped where the library cannot be loaded, except on CI)."""
    return extractor_function(request.param)


@pytest.fixture
def reload_libarchive() -> Iterator[None]:
    """Forget the loaded libarchive before and after the test, so a test can make the load fail."""
    extract_native._load.cache_clear()
    yield
    extract_native._load.cache_clear()


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A directory holding only the extraction destination ``box/dest``; tests check nothing else appears."""
    (tmp_path / "box" / "dest").mkdir(parents=True)
    return tmp_path / "box"


def assert_only_dest(box: Path) -> None:
    assert sorted(os.listdir(box)) == ["dest"]
    assert sorted(os.listdir(box.parent)) == ["box"]


class Stream:
    """A Readable over ``data`` that counts what was read, with short reads as from a socket."""

    def __init__(self, data: bytes, max_read: int = 64 * 1024) -> None:
        self._data = io.BytesIO(data)
        self._max_read = max_read
        self.consumed = 0

    def read(self, n: int) -> bytes:
        chunk = self._data.read(min(n, self._max_read))
        self.consumed += len(chunk)
        return chunk


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar made by tarfile (end-of-archive marker and record padding included)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def tree(root: Path) -> dict[str, object]:
    """relpath -> content bytes, "dir", or "-> target" for symlinks (not followed)."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.read_bytes()
    return found


def run(extract: Extract, data: bytes, dest: Path, **limits: int) -> ExtractStats:
    dest.mkdir(parents=True, exist_ok=True)
    stream = Stream(data)
    stats = extract(stream, dest, **limits)
    assert stream.consumed == len(data)  # read to its very end, so a hash covers every byte
    return stats


# --------------------------------------------------------------------------------------------------
# Choosing the extractor, and falling back


def test_choose_uses_libarchive_when_it_loads(caplog: pytest.LogCaptureFixture) -> None:
    extractor_function("libarchive")  # skips where it cannot load
    with caplog.at_level(logging.INFO):
        assert extract_native.choose_extractor(logging.getLogger("test")) is extract_native.extract_tar_gz
    assert caplog.records == []
    version = extract_native.libarchive_version()
    assert version is not None
    assert version >= extract_native.MIN_VERSION


def test_libarchive_is_present_on_ci() -> None:
    if not os.environ.get("CI"):
        pytest.skip("only CI must have the system library")
    assert extract_native.libarchive_problem() is None


def _fail_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: str, *args: object, **kwargs: object) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)


@pytest.mark.usefixtures("reload_libarchive")
def test_falls_back_with_a_log_line_when_libarchive_cannot_be_loaded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    _fail_to_load(monkeypatch)
    logger = logging.getLogger("test.fallback")
    with caplog.at_level(logging.INFO, logger="test.fallback"):
        chosen = extract_native.choose_extractor(logger)
    assert chosen is extract_module.extract_tar_gz
    (line,) = caplog.messages
    assert "Python's tarfile" in line
    assert "libarchive.so.13: cannot open shared object file" in line  # says why
    assert "libarchive13" in line  # and what to install
    # The fallback extracts as usual.
    data = gzip.compress(tar_bytes(member("d", tarfile.DIRTYPE), member("d/f.txt", data=b"hello")))
    assert run(chosen, data, tmp_path / "dest") == ExtractStats(files=1, directories=1, bytes=5)
    assert (tmp_path / "dest" / "d" / "f.txt").read_bytes() == b"hello"
    # Asked for directly, the native extractor says why it cannot run.
    with pytest.raises(extract_native.LibarchiveUnavailableError, match="cannot open shared object"):
        extract_native.extract_tar_gz(Stream(data), tmp_path)


@pytest.mark.usefixtures("reload_libarchive")
def test_falls_back_when_the_library_is_not_libarchive(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a lookup that finds nothing gives ctypes.CDLL(None): a handle without libarchive's symbols.
    real = ctypes.CDLL
    monkeypatch.setattr(ctypes, "CDLL", lambda name, *args, **kwargs: real(None))
    problem = extract_native.libarchive_problem()
    assert problem is not None
    assert "archive_" in problem
    assert extract_native.choose_extractor() is extract_module.extract_tar_gz


@pytest.mark.usefixtures("reload_libarchive")
def test_falls_back_when_libarchive_is_too_old(monkeypatch: pytest.MonkeyPatch) -> None:
    extractor_function("libarchive")  # skips where it does not load at all
    extract_native._load.cache_clear()
    monkeypatch.setattr(extract_native, "MIN_VERSION", 99_000_000)
    problem = extract_native.libarchive_problem()
    assert problem is not None
    assert "older than 99000000" in problem
    assert extract_native.choose_extractor() is extract_module.extract_tar_gz


@pytest.mark.usefixtures("reload_libarchive")
def test_falls_back_outside_a_utf8_locale(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # libarchive would convert pax (UTF-8) names to an ASCII locale and lose non-ASCII ones.
    monkeypatch.setattr(extract_native.locale, "nl_langinfo", lambda item: "ANSI_X3.4-1968")
    logger = logging.getLogger("test.locale")
    with caplog.at_level(logging.INFO, logger="test.locale"):
        assert extract_native.choose_extractor(logger) is extract_module.extract_tar_gz
    assert "ANSI_X3.4-1968, not UTF-8" in caplog.text


# --------------------------------------------------------------------------------------------------
# Hostile members


@pytest.mark.parametrize(
    ("kind", "word"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_special_member_stops_extraction_there(extract: Extract, box: Path, kind: bytes, word: str) -> None:
    data = gzip.compress(tar_bytes(member("before", data=b"1"), member("dev", kind), member("after", data=b"2")))
    with pytest.raises(UnsafeArchiveError, match=word):
        run(extract, data, box / "dest")
    assert tree(box / "dest") == {"before": b"1"}
    assert_only_dest(box)


@pytest.mark.skipif(not IS_ROOT or shutil.which("tar") is None, reason="needs root (mknod) and GNU tar")
def test_devices_and_fifos_archived_by_gnu_tar_are_refused(extract: Extract, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for name in ("fifo", "null"):
        path = tmp_path / f"{name}.tar.gz"
        subprocess.run(["tar", "-czf", str(path), "-C", str(src), name], check=True, capture_output=True)
        dest = tmp_path / f"dest-{name}"
        with pytest.raises(UnsafeArchiveError, match="FIFO|character device"):
            run(extract, path.read_bytes(), dest)
        assert os.listdir(dest) == []


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_setuid_file_archived_by_gnu_tar_loses_its_bit(extract: Extract, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "tool", 0o6755)
    (src / "shared").mkdir()
    os.chmod(src / "shared", 0o3777)
    path = tmp_path / "a.tar.gz"
    subprocess.run(["tar", "-czf", str(path), "-C", str(src), "."], check=True, capture_output=True)
    dest = tmp_path / "dest"
    run(extract, path.read_bytes(), dest)
    assert stat.S_IMODE(os.stat(dest / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "shared").st_mode) == 0o777


def test_symlink_chain_through_a_directory_link_is_refused(extract: Extract, box: Path) -> None:
    # "d/up" -> ".." is the destination itself; "e" -> "d/up/.." looks like "d" on paper but leads to box.
    data = gzip.compress(
        tar_bytes(
            member("d", tarfile.DIRTYPE),
            member("d/up", tarfile.SYMTYPE, linkname=".."),
            member("e", tarfile.SYMTYPE, linkname="d/up/.."),
        )
    )
    with pytest.raises(UnsafeArchiveError, match="'e'.*outside the destination"):
        run(extract, data, box / "dest")
    assert tree(box / "dest") == {"d": "dir"}  # every link removed again
    assert_only_dest(box)


def test_symlink_target_given_by_pax_linkpath_is_checked(extract: Extract, box: Path) -> None:
    data = gzip.compress(tar_bytes(member("l", tarfile.SYMTYPE, linkname="ok", pax_headers={"linkpath": "../../etc"})))
    with pytest.raises(UnsafeArchiveError, match="'l' is a symlink to '../../etc'"):
        run(extract, data, box / "dest")
    assert_only_dest(box)


def test_hard_link_out_given_by_pax_linkpath_is_refused(extract: Extract, box: Path) -> None:
    (box.parent / "secret").write_bytes(b"secret")
    link = member("h", tarfile.LNKTYPE, linkname="fine", pax_headers={"linkpath": "../../secret"})
    data = gzip.compress(tar_bytes(link))
    with pytest.raises(UnsafeArchiveError, match="hard link"):
        run(extract, data, box / "dest")
    assert os.listdir(box / "dest") == []
    assert os.stat(box.parent / "secret").st_nlink == 1


def test_hard_link_to_a_symlink_member_is_refused(extract: Extract, box: Path) -> None:
    data = gzip.compress(
        tar_bytes(
            member("s", tarfile.SYMTYPE, linkname="t"),
            member("t", data=b"x"),
            member("h", tarfile.LNKTYPE, linkname="s"),
        )
    )
    with pytest.raises(UnsafeArchiveError, match="'h' is a hard link to 's'"):
        run(extract, data, box / "dest")


def test_name_given_by_pax_path_is_checked(extract: Extract, box: Path) -> None:
    # The ustar name field says "benign"; the pax record, which wins, says "../evil".
    data = gzip.compress(tar_bytes(member("benign", data=b"pwned", pax_headers={"path": "../evil"})))
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil'"):
        run(extract, data, box / "dest")
    assert_only_dest(box)


def test_pax_global_header_path_is_checked(extract: Extract, box: Path) -> None:
    data = gzip.compress(
        tar_bytes(member("pax_global_header", tarfile.XGLTYPE, pax_headers={"path": "../g"}), member("f", data=b"x"))
    )
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./g'"):
        run(extract, data, box / "dest")
    assert_only_dest(box)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_long_names_and_link_names(extract: Extract, tmp_path: Path, fmt: int) -> None:
    # Names past ustar's 100 (name) and 155 (prefix) bytes: pax records, or GNU 'L'/'K' members.
    deep = "/".join(["directory-" + "x" * 40] * 4)
    unicode = "ünïcödé-日本-" + "y" * 60
    link = "../" * 4 + f"{deep}/{unicode}"  # long enough for a pax linkpath or a GNU 'K' member
    members = [
        member(deep, tarfile.DIRTYPE),
        member(f"{deep}/{unicode}", data=b"long"),
        member(f"{deep}/link-to-it", tarfile.SYMTYPE, linkname=unicode),
        member(f"{deep}/up-and-down", tarfile.SYMTYPE, linkname=link),
        member(f"{deep}/hard", tarfile.LNKTYPE, linkname=f"{deep}/{unicode}"),
    ]
    dest = tmp_path / "dest"
    stats = run(extract, gzip.compress(tar_bytes(*members, fmt=fmt)), dest)
    assert stats == ExtractStats(files=4, directories=1, bytes=4)
    assert (dest / deep / unicode).read_bytes() == b"long"
    assert os.readlink(dest / deep / "link-to-it") == unicode
    assert (dest / deep / "up-and-down").read_bytes() == b"long"
    assert os.stat(dest / deep / "hard").st_ino == os.stat(dest / deep / unicode).st_ino


def test_gnu_long_name_with_dotdot_is_refused(extract: Extract, box: Path) -> None:
    name = "a/" * 60 + "../" * 61 + "evil"
    data = gzip.compress(tar_bytes(member(name, data=b"pwned"), fmt=tarfile.GNU_FORMAT))
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.' component"):
        run(extract, data, box / "dest")
    assert_only_dest(box)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_huge_long_name_header_is_a_bomb(extract: Extract, box: Path, fmt: int) -> None:
    data = gzip.compress(tar_bytes(member("n" * (20 * MiB), data=b"x"), fmt=fmt))
    assert len(data) < MiB
    with pytest.raises(UnsafeArchiveError, match="decompression bomb"):
        run(extract, data, box / "dest")
    assert os.listdir(box / "dest") == []


def test_many_pax_headers_in_a_row_are_a_bomb(extract: Extract, box: Path) -> None:
    # Each header is small enough for any parser; together they are 9 MiB of metadata before one member.
    one = tarfile.TarInfo._create_pax_generic_header(  # type: ignore[attr-defined]
        {"comment": "c" * (900 * 1024)}, tarfile.XHDTYPE, "utf-8"
    )
    body = one * 10 + tar_bytes(member("f", data=b"x"), fmt=tarfile.USTAR_FORMAT)
    with pytest.raises(UnsafeArchiveError, match="tar headers in a row"):
        run(extract, gzip.compress(body), box / "dest")
    assert os.listdir(box / "dest") == []


def _with_size(info: tarfile.TarInfo, size: int) -> bytes:
    """One GNU header declaring ``size`` (base-256 when large), 512 bytes of data, the end marker."""
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + b"x" * 512 + bytes(1024)


@pytest.mark.parametrize("how", ["pax size", "base-256 size"])
def test_huge_declared_size_is_refused_before_any_write(extract: Extract, box: Path, how: str) -> None:
    if how == "pax size":
        body = tar_bytes(member("big", data=b"x", pax_headers={"size": str(10**15)}))
    else:
        body = _with_size(tarfile.TarInfo("big"), 1 << 40)
    with pytest.raises(UnsafeArchiveError, match="max_bytes"):
        run(extract, gzip.compress(body), box / "dest")
    assert os.listdir(box / "dest") == []


def test_declared_size_beyond_the_data_is_truncation(extract: Extract, box: Path) -> None:
    with pytest.raises(FetchError, match="truncated"):
        run(extract, gzip.compress(_with_size(tarfile.TarInfo("f"), 5000)), box / "dest")


# --------------------------------------------------------------------------------------------------
# Sparse files


def _sparse_archives(tmp_path: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    src = tmp_path / "sparse-src"
    src.mkdir()
    with open(src / "holes.bin", "wb") as out:
        out.seek(3 * MiB)
        out.write(b"middle")
        out.seek(9 * MiB)
        out.write(b"end")
    with open(src / "hole-at-end.bin", "wb") as out:
        out.write(b"start")
        out.truncate(2 * MiB)
    content = {name: (src / name).read_bytes() for name in ("holes.bin", "hole-at-end.bin")}
    archives: dict[str, bytes] = {}
    for label, options in {
        "gnu": ["--format=gnu"],
        "pax-0.0": ["--format=pax", "--sparse-version=0.0"],
        "pax-0.1": ["--format=pax", "--sparse-version=0.1"],
        "pax-1.0": ["--format=pax", "--sparse-version=1.0"],
    }.items():
        path = tmp_path / f"sparse-{label}.tar.gz"
        subprocess.run(
            ["tar", *options, "--sparse", "-czf", str(path), "-C", str(src), *content],
            check=True,
            capture_output=True,
        )
        archives[label] = path.read_bytes()
    return content, archives


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_sparse_files_extract_whole_and_count_their_holes(extract: Extract, tmp_path: Path) -> None:
    content, archives = _sparse_archives(tmp_path)
    for label, data in archives.items():
        assert len(data) < 10_000, label  # the holes are not in the archive
        dest = tmp_path / f"dest-{label}"
        stats = run(extract, data, dest)
        assert stats == ExtractStats(files=2, directories=0, bytes=sum(map(len, content.values()))), label
        for name, expected in content.items():
            assert hashlib.sha256((dest / name).read_bytes()).digest() == hashlib.sha256(expected).digest(), label


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_sparse_file_counts_against_max_bytes(extract: Extract, tmp_path: Path) -> None:
    _, archives = _sparse_archives(tmp_path)
    for label, data in archives.items():
        dest = tmp_path / f"dest-{label}"
        with pytest.raises(UnsafeArchiveError, match="max_bytes"):
            run(extract, data, dest, max_bytes=4 * MiB)
        assert sum(p.stat().st_size for p in dest.iterdir()) <= 4 * MiB, label


# --------------------------------------------------------------------------------------------------
# Broken streams


def _two_files() -> bytes:
    return tar_bytes(member("a", data=b"hello"), member("b", data=b"world" * 200))


@pytest.mark.parametrize(
    ("cut", "what"),
    [
        (512 + 100, "in a's data"),
        (1024 + 200, "in b's header"),
        (1024 + 512 + 300, "in b's data"),
        (1024 + 512 + 1024, "after b, no end-of-archive marker"),
    ],
)
def test_tar_stream_cut_inside_valid_gzip(extract: Extract, tmp_path: Path, cut: int, what: str) -> None:
    data = gzip.compress(_two_files()[:cut])
    with pytest.raises(FetchError, match="truncated"):
        run(extract, data, tmp_path / "dest")


def test_one_zero_block_ends_the_archive(extract: Extract, tmp_path: Path) -> None:
    # GNU tar and tarfile accept a lone zero block as the end; so do both extractors.
    data = gzip.compress(_two_files()[: 1024 + 512 + 1024 + 512])
    assert run(extract, data, tmp_path / "dest") == ExtractStats(files=2, directories=0, bytes=1005)


@pytest.mark.parametrize("garbage", [b"garbage" * 100, bytes(5000)])
def test_bytes_after_the_end_marker_are_read_and_ignored(extract: Extract, tmp_path: Path, garbage: bytes) -> None:
    data = gzip.compress(_two_files() + garbage) + garbage  # inside the gzip member, and after it
    assert run(extract, data, tmp_path / "dest") == ExtractStats(files=2, directories=0, bytes=1005)


@pytest.mark.parametrize("where", ["crc", "length", "deflate data"])
def test_corrupt_gzip_is_refused(extract: Extract, tmp_path: Path, where: str) -> None:
    data = bytearray(gzip.compress(_two_files() + os.urandom(200_000)))
    offset = {"crc": -8, "length": -3, "deflate data": len(data) // 2}[where]
    data[offset] ^= 0x5A
    with pytest.raises(FetchError, match="gzip|corrupt|truncated|invalid"):
        run(extract, bytes(data), tmp_path / "dest")


def test_an_error_from_the_stream_propagates_unchanged(extract: Extract, tmp_path: Path) -> None:
    # The network dropping mid-archive: the reader's own exception, not a parser's guess about it.
    data = gzip.compress(tar_bytes(member("big", data=os.urandom(300_000))), compresslevel=0)

    class Dropping(Stream):
        def read(self, n: int) -> bytes:
            if self.consumed > 100_000:
                raise ConnectionResetError("connection reset by peer (test)")
            return super().read(n)

    (tmp_path / "dest").mkdir()
    with pytest.raises(ConnectionResetError, match="test"):
        extract(Dropping(data), tmp_path / "dest")


def test_zlib_error_in_the_middle_is_a_fetch_error(extract: Extract, tmp_path: Path) -> None:
    body = zlib.compress(_two_files())  # a zlib stream, not gzip
    with pytest.raises(FetchError, match="not valid gzip"):
        run(extract, body, tmp_path / "dest")


# --------------------------------------------------------------------------------------------------
# What differs, and what does not depend on the process


@pytest.mark.parametrize("flag", [b"V", b"M", b"N", b"Z"])
def test_exotic_type_flags_never_leave_the_destination(
    request: pytest.FixtureRequest, tmp_path: Path, flag: bytes
) -> None:
    # tarfile refuses GNU volume labels ('V'), multi-volume continuations ('M'), old long names ('N')
    # and unknown flags; libarchive reads them as what GNU tar makes of them (a skipped label, a
    # regular file). Either way nothing but a regular file inside the destination can come of it.
    data = gzip.compress(tar_bytes(member("f", flag, data=None), fmt=tarfile.GNU_FORMAT))
    for name in ("tarfile", "libarchive"):
        extract = extractor_function(name)
        dest = tmp_path / name
        if name == "tarfile":
            with pytest.raises(UnsafeArchiveError, match="unsupported type"):
                run(extract, data, dest)
        else:
            run(extract, data, dest)
        for path in dest.rglob("*"):
            assert path.is_file()
            assert not path.is_symlink()


def test_concurrent_extractions_do_not_interfere(tmp_path: Path) -> None:
    # libarchive's own writer would chdir (process-wide); this one never does, so threads are safe.
    extract = extractor_function("libarchive")
    archives = {
        f"t{i}": gzip.compress(tar_bytes(*(member(f"t{i}/f{j}", data=os.urandom(3000)) for j in range(200))))
        for i in range(4)
    }
    results: dict[str, object] = {}

    def work(key: str) -> None:
        try:
            results[key] = run(extract, archives[key], tmp_path / key)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            results[key] = err

    threads = [threading.Thread(target=work, args=(key,)) for key in archives]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {key: ExtractStats(files=200, directories=0, bytes=600_000) for key in archives}
    for key, data in archives.items():
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar.getmembers():
                handle = tar.extractfile(info)
                assert handle is not None
                assert (tmp_path / key / info.name).read_bytes() == handle.read()
