"""Listing a source: what collect_source accepts, refuses and reads."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from pathlib import Path

import pytest

from airflow_s3_publisher import sources
from airflow_s3_publisher.exceptions import SourceError
from airflow_s3_publisher.sources import collect_source
from tests.archive_support import (
    IS_ROOT,
    make_tree,
)

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


@pytest.mark.parametrize("size", [1, 5 * 1024 + 17, 3 * 4096], ids=["one-byte", "uneven", "whole-parts"])
def test_hash_listed_parts_gives_the_whole_and_each_parts_digest(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f.bin").write_bytes(data)
    [entry] = collect_source(tmp_path / "f.bin")
    whole, parts = sources.hash_listed_parts(entry, 4096)
    assert whole == hashlib.sha256(data).digest() == sources.hash_listed(entry)
    assert parts == [hashlib.sha256(data[i : i + 4096]).digest() for i in range(0, size, 4096)]


def test_hash_listed_parts_refuses_a_file_that_changed_since_it_was_listed(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 10_000)
    [entry] = collect_source(tmp_path / "f.bin")
    (tmp_path / "f.bin").write_bytes(b"x" * 10_001)
    with pytest.raises(SourceError, match=r"f\.bin changed while being published"):
        sources.hash_listed_parts(entry, 4096)
