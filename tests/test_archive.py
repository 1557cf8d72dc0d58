"""Streaming a source into a tar.gz: round trips, files that change while published, failing sinks."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_s3_publisher import sources
from airflow_s3_publisher.archive import write_tar_gz
from airflow_s3_publisher.compression import CHUNK_SIZE, gzip_backend
from airflow_s3_publisher.exceptions import SourceError, UnsafeArchiveError
from airflow_s3_publisher.extract import ExtractStats, extract_tar_gz
from airflow_s3_publisher.paths import safe_join
from airflow_s3_publisher.sources import SourceEntry, collect_source
from tests.archive_support import (
    IS_ROOT,
    CountingReader,
    archive,
    csv_like,
    extract,
    make_tree,
    snapshot,
)

# --------------------------------------------------------------------------------------------------
# write_tar_gz and round trips


def test_round_trip_preserves_tree(tmp_path: Path, backend: str, extractor: str) -> None:
    src = tmp_path / "src"
    expected = make_tree(src)
    out = io.BytesIO()
    stats = write_tar_gz(collect_source(src), out)
    data = out.getvalue()
    files = {k: v for k, v in expected.items() if v is not None}
    assert stats.files == len(files)
    assert stats.directories == len(expected) - len(files)
    assert stats.content_bytes == sum(len(v) for v in files.values())
    assert stats.archive_bytes == len(data)
    assert stats.gzip_backend.startswith(backend + " level ")
    assert stats.archive_bytes < stats.content_bytes  # compressed

    dest = tmp_path / "dest"
    reader = CountingReader(data, max_read=7777)  # short reads, as from a network stream
    dest.mkdir()
    extracted = extract_tar_gz(reader, dest)
    assert snapshot(dest) == expected
    assert reader.consumed == len(data)
    assert extracted.files == len(files)
    assert extracted.directories == stats.directories
    assert extracted.bytes == stats.content_bytes


def test_round_trip_keeps_modes_and_mtimes(tmp_path: Path, backend: str, extractor: str) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("x")
    os.chmod(src / "d" / "f", 0o640)
    os.chmod(src / "d", 0o750)
    os.utime(src / "d" / "f", (1_600_000_000.7, 1_600_000_000.7))
    os.utime(src / "d", (1_500_000_000, 1_500_000_000))
    dest = tmp_path / "dest"
    extract(archive(collect_source(src)), dest)
    assert stat.S_IMODE(os.stat(dest / "d" / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(dest / "d").st_mode) == 0o750
    assert os.stat(dest / "d" / "f").st_mtime == 1_600_000_000  # whole seconds
    assert os.stat(dest / "d").st_mtime == 1_500_000_000


def test_single_file_sits_at_archive_root(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "result.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(csv_like(1000))
    with tarfile.open(fileobj=io.BytesIO(archive(collect_source(path))), mode="r:gz") as tar:
        assert tar.getnames() == ["result.csv"]


@pytest.mark.parametrize("level", [0, 1, 6, 9, None])
def test_levels_round_trip(tmp_path: Path, backend: str, level: int | None) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.csv").write_bytes(csv_like(300_000))
    out = io.BytesIO()
    stats = write_tar_gz(collect_source(src), out, compression_level=level)
    assert stats.gzip_backend == gzip_backend(level)
    if level == 0:
        assert stats.archive_bytes > stats.content_bytes  # stored, not compressed
    else:
        assert stats.archive_bytes < stats.content_bytes / 2
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        handle = tar.extractfile("data.csv")
        assert handle is not None
        assert handle.read() == csv_like(300_000)


def test_read_by_gnu_tar(tmp_path: Path, backend: str) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    expected = make_tree(src)
    path = tmp_path / "out.tar.gz"
    path.write_bytes(archive(collect_source(src)))
    listing = subprocess.run(["tar", "-tzf", str(path)], check=True, capture_output=True, text=True).stdout
    names = {line.rstrip("/") for line in listing.splitlines()}
    assert names == set(expected)
    dest = tmp_path / "gnu"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(path), "-C", str(dest)], check=True, capture_output=True)
    assert snapshot(dest) == expected
    # gzip itself agrees the stream (CRC, length) is sound.
    subprocess.run(["gzip", "-t", str(path)], check=True, capture_output=True)


def test_read_by_tarfile(tmp_path: Path, backend: str) -> None:
    src = tmp_path / "src"
    expected = make_tree(src)
    with tarfile.open(fileobj=io.BytesIO(archive(collect_source(src))), mode="r:gz") as tar:
        members = tar.getmembers()
        assert {m.name for m in members} == set(expected)
        for info in members:
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            if info.isdir():
                assert expected[info.name] is None
            else:
                handle = tar.extractfile(info)
                assert handle is not None
                assert handle.read() == expected[info.name]


def test_extracts_gnu_tar_archive_with_dot_prefix(tmp_path: Path, extractor: str) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    expected = make_tree(src)
    path = tmp_path / "gnu.tar.gz"
    subprocess.run(["tar", "-czf", str(path), "-C", str(src), "."], check=True, capture_output=True)
    dest = tmp_path / "dest"
    extract(path.read_bytes(), dest)
    assert snapshot(dest) == expected


def test_deterministic_output(tmp_path: Path, backend: str) -> None:
    src = tmp_path / "src"
    make_tree(src)
    first = archive(collect_source(src))
    assert archive(collect_source(src)) == first
    # The same tree elsewhere, with other owners but the same content, modes and mtimes: same bytes.
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    if IS_ROOT:
        for dirpath, _, filenames in os.walk(copy):
            for name in filenames:
                os.chown(Path(dirpath, name), 1234, 5678)
    for entry in collect_source(src):
        os.utime(copy / entry.relpath, (entry.mtime, entry.mtime))
    assert archive(collect_source(copy)) == first
    # Standard gzip header: deflate, no FNAME flag, mtime 0.
    assert first[:3] == b"\x1f\x8b\x08"
    assert first[3] & 0x08 == 0
    assert first[4:8] == b"\0\0\0\0"


def test_output_changes_with_content(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"a" * 100)
    mtime = os.stat(src / "f").st_mtime
    before = archive(collect_source(src))
    (src / "f").write_bytes(b"b" * 100)
    os.utime(src / "f", (mtime, mtime))
    assert archive(collect_source(src)) != before


def test_progress_callback(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = make_tree(src)
    calls: list[tuple[int, int]] = []
    write_tar_gz(collect_source(src), io.BytesIO(), on_progress=lambda b, f: calls.append((b, f)))
    files = [v for v in expected.values() if v is not None]
    assert sum(b for b, _ in calls) == sum(len(v) for v in files)
    assert sum(f for _, f in calls) == len(files)


def test_empty_source_gives_valid_empty_archive(tmp_path: Path, extractor: str) -> None:
    out = io.BytesIO()
    stats = write_tar_gz([], out)
    assert (stats.files, stats.directories, stats.content_bytes) == (0, 0, 0)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        assert tar.getnames() == []
    dest = tmp_path / "dest"
    assert extract(out.getvalue(), dest) == ExtractStats(files=0, directories=0, bytes=0)
    assert os.listdir(dest) == []


# --------------------------------------------------------------------------------------------------
# Files that change while published; failing sinks


def _one_file(tmp_path: Path, content: bytes) -> tuple[Path, list[SourceEntry]]:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "data.bin"
    path.write_bytes(content)
    return path, collect_source(src)


def test_file_grown_after_listing(tmp_path: Path) -> None:
    path, entries = _one_file(tmp_path, b"x" * 1000)
    with path.open("ab") as handle:
        handle.write(b"more")
    streamed: list[int] = []
    with pytest.raises(SourceError, match="changed while being published") as err:
        write_tar_gz(entries, io.BytesIO(), on_progress=lambda b, f: streamed.append(b))
    assert str(path) in str(err.value)
    assert streamed == []  # refused when opened, before any content was streamed


def test_file_touched_after_listing(tmp_path: Path) -> None:
    path, entries = _one_file(tmp_path, b"x" * 1000)
    os.utime(path, (1_000_000_000, 1_000_000_000))  # same size, other mtime
    with pytest.raises(SourceError, match="changed while being published"):
        write_tar_gz(entries, io.BytesIO())


def test_file_removed_after_listing(tmp_path: Path) -> None:
    path, entries = _one_file(tmp_path, b"x" * 1000)
    path.unlink()
    with pytest.raises(SourceError, match="changed while being published") as err:
        write_tar_gz(entries, io.BytesIO())
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"x" * 10, b""])
def test_file_replaced_by_fifo_after_listing(tmp_path: Path, content: bytes) -> None:
    path, entries = _one_file(tmp_path, content)
    path.unlink()
    os.mkfifo(path)
    os.utime(path, (entries[0].mtime, entries[0].mtime))  # even with the listed size and mtime
    with pytest.raises(SourceError, match="no longer a regular file"):
        write_tar_gz(entries, io.BytesIO())  # must not hang on the FIFO


def test_file_yielding_more_than_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files whose stat size lies (procfs, some FUSE file systems) yield more than they claim.
    path, entries = _one_file(tmp_path, b"x" * 100)

    class Longer(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            return b"extra"

    monkeypatch.setattr(sources, "open", lambda fd, *a, **k: Longer(fd, "rb"), raising=False)
    with pytest.raises(SourceError, match="changed while being published.*grew") as err:
        write_tar_gz(entries, io.BytesIO())
    assert str(path) in str(err.value)


def test_file_grows_while_read(tmp_path: Path) -> None:
    path, entries = _one_file(tmp_path, os.urandom(3 * CHUNK_SIZE))

    def grow(nbytes: int, files: int) -> None:
        with path.open("ab") as handle:
            handle.write(b"appended while reading")

    with pytest.raises(SourceError, match="changed while being published") as err:
        write_tar_gz(entries, io.BytesIO(), on_progress=grow)
    assert str(path) in str(err.value)


def test_file_shrinks_while_read(tmp_path: Path) -> None:
    path, entries = _one_file(tmp_path, os.urandom(3 * CHUNK_SIZE))

    def shrink(nbytes: int, files: int) -> None:
        os.truncate(path, CHUNK_SIZE + 10)

    with pytest.raises(SourceError, match="changed while being published"):
        write_tar_gz(entries, io.BytesIO(), on_progress=shrink)


def test_file_rewritten_same_size_while_read(tmp_path: Path) -> None:
    path, entries = _one_file(tmp_path, os.urandom(3 * CHUNK_SIZE))
    done: list[bool] = []

    def rewrite(nbytes: int, files: int) -> None:
        if not done:
            with path.open("r+b") as handle:
                handle.write(b"changed")
            os.utime(path, (1_000_000_000, 1_000_000_000))
            done.append(True)

    with pytest.raises(SourceError, match="changed while being published"):
        write_tar_gz(entries, io.BytesIO(), on_progress=rewrite)


class FailingWriter:
    def __init__(self, fail_after: int) -> None:
        self.fail_after = fail_after
        self.received = 0

    def write(self, b: bytes | memoryview) -> int:
        self.received += len(b)
        if self.received > self.fail_after:
            raise OSError("disk full (test)")
        return len(b)


def test_writer_error_propagates(tmp_path: Path, backend: str) -> None:
    _, entries = _one_file(tmp_path, os.urandom(3 * CHUNK_SIZE))
    with pytest.raises(OSError, match="disk full"):
        write_tar_gz(entries, FailingWriter(fail_after=100_000))


def test_writer_error_on_final_flush_propagates(tmp_path: Path) -> None:
    _, entries = _one_file(tmp_path, b"small")
    complete = archive(entries)
    with pytest.raises(OSError, match="disk full"):
        write_tar_gz(entries, FailingWriter(fail_after=len(complete) - 1))


def test_read_error_propagates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, entries = _one_file(tmp_path, b"x" * 5000)

    class BrokenFile(io.FileIO):
        def readinto(self, buffer: object) -> int:
            raise OSError(5, "Input/output error (test)")

    monkeypatch.setattr(sources, "open", lambda fd, *a, **k: BrokenFile(fd, "rb"), raising=False)
    with pytest.raises(OSError, match="Input/output error"):
        write_tar_gz(entries, io.BytesIO())


# --------------------------------------------------------------------------------------------------
# Property: any tree of valid names survives write -> extract unchanged

NAMES = st.text(alphabet=st.sampled_from(list("abcXYZ019 -_.,'\"#%&+=@~\\日本éßü😀")), min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
TREES = st.dictionaries(
    NAMES,
    st.one_of(st.binary(max_size=300), st.dictionaries(NAMES, st.binary(max_size=300), max_size=3)),
    max_size=6,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(TREES)
def test_round_trip_property(extractor: str, tree: dict[str, bytes | dict[str, bytes]]) -> None:
    expected: dict[str, bytes | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for name, value in tree.items():
            if isinstance(value, bytes):
                (src / name).write_bytes(value)
                expected[name] = value
            else:
                (src / name).mkdir()
                expected[name] = None
                for child, content in value.items():
                    (src / name / child).write_bytes(content)
                    expected[f"{name}/{child}"] = content
        refused = []
        for rel in expected:
            try:
                safe_join(Path(tmp), rel)
            except UnsafeArchiveError:
                refused.append(rel)
        if refused:
            # Names that fetching would refuse are refused when publishing already.
            with pytest.raises(SourceError, match="backslash"):
                collect_source(src)
            return
        dest = Path(tmp, "dest")
        extract(archive(collect_source(src)), dest)
        assert snapshot(dest) == expected


_NAME_CHARS = st.one_of(
    st.characters(min_codepoint=1, max_codepoint=127, exclude_characters="/"),  # mostly ASCII: the fast path
    st.characters(codec="utf-8", exclude_characters="\x00/"),
)


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.text(_NAME_CHARS, min_size=1, max_size=40), min_size=1, max_size=4),
    is_dir=st.booleans(),
    size=st.one_of(st.integers(0, 1 << 20), st.integers(8**11 - 2, 8**11 + 2)),
    mtime=st.one_of(st.floats(0, 2**33, allow_nan=False), st.integers(-5, 5), st.just(float(8**11))),
    mode=st.integers(0, 0o777),
)
def test_header_fast_path_writes_what_tarfile_writes(
    parts: list[str], is_dir: bool, size: int, mtime: float, mode: int
) -> None:
    # The ustar fast path must give tarfile's bytes exactly, and step aside (None) where tarfile would
    # add a pax record: a long or non-ASCII name, a size or mtime that does not fit in 11 octal digits.
    from airflow_s3_publisher import archive

    entry = SourceEntry(path=Path("/x"), relpath="/".join(parts), size=size, mtime=mtime, mode=mode, is_dir=is_dir)
    expected = archive._pax_header(entry)
    fast = archive._ustar_header(entry)
    if fast is None:
        name = entry.relpath + ("/" if is_dir else "")
        needs_pax = len(name) > 100 or not name.isascii() or (not is_dir and size >= 8**11) or int(mtime) >= 8**11
        assert needs_pax or int(mtime) < 0
    else:
        assert fast == expected
        assert len(fast) == tarfile.BLOCKSIZE


def test_header_fast_path_serves_ordinary_members() -> None:
    from airflow_s3_publisher import archive

    for is_dir in (False, True):
        entry = SourceEntry(Path("/x"), "d00/f00001.bin", 4096, 1_700_000_000.5, 0o644, is_dir)
        fast = archive._ustar_header(entry)
        assert fast is not None
        assert fast == archive._pax_header(entry)
        assert tarfile.TarInfo.frombuf(fast, "utf-8", "surrogateescape").name == "d00/f00001.bin"
