"""Listing a source, streaming it into a tar.gz and extracting archives safely."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_s3_publisher import compression, extract_native, sources
from airflow_s3_publisher.archive import write_tar_gz
from airflow_s3_publisher.compression import CHUNK_SIZE, gzip_backend
from airflow_s3_publisher.exceptions import FetchError, InvalidSpecError, SourceError, UnsafeArchiveError
from airflow_s3_publisher.extract import ExtractStats, extract_tar_gz
from airflow_s3_publisher.paths import safe_join
from airflow_s3_publisher.sources import SourceEntry, collect_source
from tests.support import extractor_function

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
MiB = 1 << 20


# --------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(params=["isal", "zlib-ng", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force one gzip backend for the test (skipped when that one is not installed)."""
    name: str = request.param
    chosen = tuple(b for b in compression._BACKENDS if b.name == name)
    if not chosen:
        pytest.skip(f"{name} is not installed")
    monkeypatch.setattr(compression, "_BACKENDS", chosen)
    return name


TAR_READERS: dict[str, type] = {"tarfile": tarfile.TarFile, "libarchive": extract_native._LibarchiveTar}
"""Each extractor's tar front end: what hands the guard a member's content (``extractfile``)."""


@pytest.fixture(params=["tarfile", "libarchive"])
def extractor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each extractor: this module's ``extract_tar_gz`` is the one under test."""
    name: str = request.param
    monkeypatch.setattr(sys.modules[__name__], "extract_tar_gz", extractor_function(name))
    return name


def csv_like(n_bytes: int, seed: int = 0) -> bytes:
    lines = []
    size = 0
    i = seed
    while size < n_bytes:
        line = f"{i},2024-01-{i % 28 + 1:02d},user{i * 7919 % 10007},{i * 31 % 997}.{i % 100:02d},ok\n".encode()
        lines.append(line)
        size += len(line)
        i += 1
    return b"".join(lines)[:n_bytes]


def make_tree(root: Path) -> dict[str, bytes | None]:
    """Create a small nested tree under ``root``; return relpath -> content (None for directories)."""
    expected: dict[str, bytes | None] = {
        "a": None,
        "a/b": None,
        "a/b/c.csv": csv_like(5000),
        "a/b/big.bin": os.urandom(CHUNK_SIZE) + csv_like(CHUNK_SIZE + 12345),  # spans chunks
        "a/zero.txt": b"",
        "empty": None,
        "empty/nested-empty": None,
        "top.txt": b"top\n",
        "ünïcödé 日本/ファイル名.txt": "héllo wörld\n".encode(),
        "ünïcödé 日本": None,
        "long-" + "x" * 150: None,
        "long-" + "x" * 150 + "/" + "y" * 120 + ".txt": b"long name\n",
    }
    for rel, content in sorted(expected.items()):
        path = root / rel
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return expected


def snapshot(root: Path) -> dict[str, bytes | None]:
    """relpath -> content (None for directories) of everything under ``root``, links not followed."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[Path(dirpath, name).relative_to(root).as_posix()] = None
        for name in filenames:
            path = Path(dirpath, name)
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def archive(entries: list[SourceEntry], **kwargs: int | None) -> bytes:
    out = io.BytesIO()
    write_tar_gz(entries, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


class CountingReader:
    """A Readable that counts what was read; ``max_read`` mimics a network stream's short reads."""

    def __init__(self, data: bytes, max_read: int | None = None) -> None:
        self._stream = io.BytesIO(data)
        self._max_read = max_read
        self.consumed = 0

    def read(self, n: int) -> bytes:
        chunk = self._stream.read(n if self._max_read is None else min(n, self._max_read))
        self.consumed += len(chunk)
        return chunk


def extract(data: bytes, destination: Path, **kwargs: int) -> ExtractStats:
    destination.mkdir(parents=True, exist_ok=True)
    return extract_tar_gz(CountingReader(data), destination, **kwargs)


def build_archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """An archive built by tarfile itself, not by the code under test."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes | None = None,
    *,
    linkname: str = "",
    mode: int = 0o644,
    pax_headers: dict[str, str] | None = None,
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = 1_700_000_000
    if pax_headers:
        info.pax_headers = pax_headers
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    if kind == tarfile.REGTYPE:
        data = data or b""
        info.size = len(data)
    return info, data


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A directory holding only the extraction destination ``box/dest``; tests check nothing else appears."""
    root = tmp_path / "box"
    (root / "dest").mkdir(parents=True)
    return root


def assert_only_dest(box: Path) -> None:
    assert sorted(os.listdir(box)) == ["dest"]
    assert sorted(os.listdir(box.parent)) == ["box"]


# --------------------------------------------------------------------------------------------------
# collect_source


def test_collect_nested_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = make_tree(src)
    os.chmod(src / "a" / "b", 0o750)
    os.chmod(src / "top.txt", 0o640)
    entries = collect_source(src)
    assert [e.relpath for e in entries] == sorted(expected)
    for entry in entries:
        content = expected[entry.relpath]
        assert entry.is_dir == (content is None)
        assert entry.path.is_absolute()
        assert entry.path == (src / entry.relpath).resolve()
        st_ = os.stat(src / entry.relpath)
        assert entry.mtime == st_.st_mtime
        assert entry.mode == stat.S_IMODE(st_.st_mode) & 0o777
        assert entry.size == (0 if content is None else len(content))
    by_rel = {e.relpath: e for e in entries}
    assert by_rel["a/b"].mode == 0o750
    assert by_rel["top.txt"].mode == 0o640


def test_collect_accepts_str_and_pathlike(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    assert collect_source(str(tmp_path)) == collect_source(tmp_path)


def test_collect_single_file(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    [entry] = collect_source(path)
    assert entry.relpath == "report.csv"
    assert entry.size == 8
    assert not entry.is_dir
    assert entry.path == path.resolve()


def test_collect_source_that_is_a_symlink_is_resolved(tmp_path: Path) -> None:
    real_dir = tmp_path / "run-5"
    make_tree(real_dir)
    (tmp_path / "latest").symlink_to("run-5")
    via_link = collect_source(tmp_path / "latest")
    assert [e.relpath for e in via_link] == [e.relpath for e in collect_source(real_dir)]
    assert all(e.path.is_relative_to(real_dir.resolve()) for e in via_link)
    # A single file named through a link keeps the name the user gave, with the target's content.
    (tmp_path / "data.csv").write_text("1,2\n")
    (tmp_path / "out.csv").symlink_to(tmp_path / "data.csv")
    [entry] = collect_source(tmp_path / "out.csv")
    assert entry.relpath == "out.csv"
    assert entry.path == (tmp_path / "data.csv").resolve()
    assert entry.size == 4


def test_collect_empty_directory(tmp_path: Path) -> None:
    assert collect_source(tmp_path) == []


def test_collect_only_empty_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "z").mkdir()
    entries = collect_source(tmp_path)
    assert [(e.relpath, e.is_dir, e.size) for e in entries] == [("x", True, 0), ("x/y", True, 0), ("z", True, 0)]


def test_collect_follows_links_inside_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "data" / "f.txt").write_text("content")
    (src / "alias.txt").symlink_to("data/f.txt")
    (src / "data-link").symlink_to("data", target_is_directory=True)
    entries = {e.relpath: e for e in collect_source(src)}
    assert set(entries) == {"alias.txt", "data", "data/f.txt", "data-link", "data-link/f.txt"}
    alias = entries["alias.txt"]
    assert not alias.is_dir
    assert alias.size == len("content")
    assert alias.path == (src / "data" / "f.txt").resolve()
    assert entries["data-link"].is_dir
    assert entries["data-link/f.txt"].path == (src / "data" / "f.txt").resolve()


def test_collect_reads_no_file_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "src")

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("collect_source opened a file")

    monkeypatch.setattr(os, "open", no_open)
    monkeypatch.setattr(sources, "open", no_open, raising=False)
    assert len(collect_source(tmp_path / "src")) == len(make_tree(tmp_path / "other"))


def test_collect_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SourceError, match="does not exist") as err:
        collect_source(missing)
    assert str(missing) in str(err.value)


def test_collect_refuses_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(SourceError, match="FIFO") as err:
        collect_source(tmp_path)
    assert str(tmp_path / "pipe") in str(err.value)
    assert "regular files and directories" in str(err.value)
    with pytest.raises(SourceError, match="FIFO"):
        collect_source(tmp_path / "pipe")


def test_collect_refuses_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # bind a short relative name: unix socket paths are limited to ~100 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("sock")
        with pytest.raises(SourceError, match="socket") as err:
            collect_source(tmp_path)
        assert str(tmp_path / "sock") in str(err.value)
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("kind", "device", "word"),
    [(stat.S_IFCHR, (1, 3), "character device"), (stat.S_IFBLK, (7, 0), "block device")],
)
def test_collect_refuses_devices(tmp_path: Path, kind: int, device: tuple[int, int], word: str) -> None:
    try:
        os.mknod(tmp_path / "dev", kind | 0o600, os.makedev(*device))
    except (PermissionError, OSError) as err:
        pytest.skip(f"cannot create a device node here: {err}")
    with pytest.raises(SourceError, match=word) as err_info:
        collect_source(tmp_path)
    assert str(tmp_path / "dev") in str(err_info.value)


def test_collect_refuses_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(SourceError, match="symlink loop") as err:
        collect_source(tmp_path)
    assert str(tmp_path / "a") in str(err.value)


@pytest.mark.parametrize("target", ["..", ".", "../.."])
def test_collect_refuses_directory_link_to_ancestor(tmp_path: Path, target: str) -> None:
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    link = src / "d" / "e" / "up"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(SourceError, match="loop") as err:
        collect_source(src)
    assert str(link) in str(err.value)


def test_collect_refuses_source_that_is_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "x").symlink_to("x")
    with pytest.raises(SourceError, match="loop"):
        collect_source(tmp_path / "x")


@pytest.mark.parametrize("relative", [True, False])
def test_collect_refuses_file_link_out_of_source(tmp_path: Path, relative: bool) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    (src / "leak.txt").symlink_to("../secret.txt" if relative else secret)
    with pytest.raises(SourceError, match="outside the source") as err:
        collect_source(src)
    assert str(src / "leak.txt") in str(err.value)
    assert str(secret) in str(err.value)


def test_collect_refuses_directory_link_out_of_source(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "d").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(SourceError, match="outside the source"):
        collect_source(src)


def test_collect_refuses_link_to_sibling_with_common_prefix(tmp_path: Path) -> None:
    # "/x/src-other" starts with "/x/src" as a string but is not inside it.
    (tmp_path / "src-other").mkdir()
    (tmp_path / "src-other" / "f").write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "l").symlink_to(tmp_path / "src-other" / "f")
    with pytest.raises(SourceError, match="outside the source"):
        collect_source(tmp_path / "src")


def test_collect_refuses_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to("missing")
    with pytest.raises(SourceError, match="broken symlink") as err:
        collect_source(tmp_path)
    assert str(tmp_path / "dangling") in str(err.value)


def test_collect_refuses_non_utf8_name(tmp_path: Path) -> None:
    bad = os.fsencode(tmp_path) + b"/caf\xe9.csv"
    try:
        fd = os.open(bad, os.O_CREAT | os.O_WRONLY, 0o644)
    except OSError as err:
        pytest.skip(f"this file system refuses non-UTF-8 names: {err}")
    os.close(fd)
    with pytest.raises(SourceError, match="not valid UTF-8") as err_info:
        collect_source(tmp_path)
    assert "caf\\xe9.csv" in str(err_info.value)


@pytest.mark.parametrize("name", ["\\", "\\x", "..\\x", "a\\..\\b", "x\\.."])
def test_collect_refuses_names_fetching_would_refuse(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("x")
    with pytest.raises(SourceError, match="backslash") as err:
        collect_source(tmp_path)
    assert str(tmp_path / name) in str(err.value)
    with pytest.raises(SourceError, match="backslash"):
        collect_source(tmp_path / name)


def test_collect_accepts_harmless_backslashes(tmp_path: Path) -> None:
    (tmp_path / "a\\b").write_text("x")
    (tmp_path / "x..\\y").write_text("x")
    assert [e.relpath for e in collect_source(tmp_path)] == ["a\\b", "x..\\y"]


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode; see the os.access test below")
def test_collect_refuses_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("x")
    path.chmod(0)
    with pytest.raises(SourceError, match="not readable") as err:
        collect_source(tmp_path)
    assert str(path) in str(err.value)


def test_collect_refuses_file_the_os_reports_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Works as root too: what collect_source asks the OS is replaced by a "no".
    path = tmp_path / "secret"
    path.write_text("x")
    real_access = os.access

    def access(p: str | os.PathLike[str], mode: int, **kwargs: object) -> bool:
        return False if Path(p) == path else real_access(p, mode)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(SourceError, match="not readable") as err:
        collect_source(tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.skipif(IS_ROOT, reason="root lists directories whatever their mode; see the scandir test below")
def test_collect_refuses_unreadable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(SourceError, match="not readable"):
            collect_source(tmp_path)
    finally:
        locked.chmod(0o755)


def test_collect_refuses_directory_the_os_cannot_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(p: str) -> object:
        if Path(p) == locked:
            raise PermissionError(13, "Permission denied", p)
        return real_scandir(p)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match="not readable") as err:
        collect_source(tmp_path)
    assert str(locked) in str(err.value)


# --------------------------------------------------------------------------------------------------
# gzip backends and levels


def test_backend_names_and_level_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    by_name = {b.name: b for b in compression._load_backends()}
    assert list(by_name)[-1] == "zlib"
    expected = {
        "isal": {None: 1, 1: 1, 2: 2, 3: 3, 6: 3, 9: 3},
        "zlib-ng": {None: 2, 1: 1, 6: 6, 9: 9},
        "zlib": {None: 1, 1: 1, 6: 6, 9: 9},
    }
    for name, levels in expected.items():
        if name not in by_name:
            continue
        monkeypatch.setattr(compression, "_BACKENDS", (by_name[name],))
        for level, native in levels.items():
            assert gzip_backend(level) == f"{name} level {native}"
        assert gzip_backend(0) == "zlib level 0"  # store is always stdlib zlib


def test_fallback_to_stdlib_when_no_fast_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "isal", None)  # makes "import isal" raise ImportError
    monkeypatch.setitem(sys.modules, "zlib_ng", None)
    assert [b.name for b in compression._load_backends()] == ["zlib"]


def test_isal_preferred_when_installed() -> None:
    pytest.importorskip("isal.isal_zlib")
    assert compression._load_backends()[0].name == "isal"


@pytest.mark.parametrize("level", [-1, 10, True, 1.5, "1"])
def test_invalid_compression_level(tmp_path: Path, level: object) -> None:
    with pytest.raises(InvalidSpecError, match="compression_level"):
        gzip_backend(level)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError):
        write_tar_gz([], io.BytesIO(), compression_level=level)  # type: ignore[arg-type]


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


# --------------------------------------------------------------------------------------------------
# safe_join


def test_safe_join_maps_under_destination(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b/c.csv") == tmp_path / "a" / "b" / "c.csv"
    assert safe_join(tmp_path, "日本/ファイル.txt") == tmp_path / "日本" / "ファイル.txt"
    assert safe_join(tmp_path, "..hidden/x..y") == tmp_path / "..hidden" / "x..y"


@pytest.mark.parametrize(
    "relpath",
    [
        "",
        "/etc/passwd",
        "//x",
        "../x",
        "a/../../x",
        "a/..",
        "..",
        ".",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "\\x",
        "\\\\server\\share",
        "..\\x",
        "a/..\\..\\x",
        "a\\..",
        "a\x00b",
    ],
)
def test_safe_join_refuses(tmp_path: Path, relpath: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        safe_join(tmp_path, relpath)


def _check_safe_join(destination: Path, text: str) -> None:
    try:
        path = safe_join(destination, text)
    except UnsafeArchiveError:
        return
    normalized = Path(os.path.normpath(path))
    assert normalized == path  # no "." or ".." left to resolve
    assert normalized != destination
    assert os.path.commonpath([normalized, destination]) == str(destination)
    assert path.relative_to(destination).as_posix() == text  # a faithful mapping, not a rewrite


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_safe_join_never_leaves_destination(text: str) -> None:
    _check_safe_join(Path("/srv/staging"), text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "\x00", "é", "..a", " "]), max_size=8).map("".join))
def test_safe_join_never_leaves_destination_tricky(text: str) -> None:
    _check_safe_join(Path("/srv/staging"), text)


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
