"""Listing a local source, and reading its files while refusing any that changed since the listing.

Pure logic: the standard library only. The plain upload, the hashing before a multipart upload and
the archive writer all read files through :func:`read_listed` / :func:`open_listed`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from airflow_s3_publisher.exceptions import SourceError, UnsafeArchiveError
from airflow_s3_publisher.filters import FileFilter
from airflow_s3_publisher.hashing import PartHashes
from airflow_s3_publisher.paths import inside, relpath_parts

__all__ = [
    "SourceEntry",
    "changed_error",
    "check_unchanged",
    "collect_source",
    "hash_listed",
    "hash_listed_parts",
    "open_listed",
    "read_listed",
]


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One file or directory of a source, as listed by :func:`collect_source`."""

    path: Path
    """Absolute path to read (symlinks inside the source already resolved)."""
    relpath: str
    """POSIX path relative to the source root; for a single-file source, the file name."""
    size: int
    mtime: float
    mode: int
    """Permission bits only (``0o777`` at most)."""
    is_dir: bool


def collect_source(source: str | os.PathLike[str], file_filter: FileFilter | None = None) -> list[SourceEntry]:
    """List the files and directories to publish from ``source``, sorted by relpath.

    ``file_filter`` (include/exclude rules, see :mod:`airflow_s3_publisher.filters`) selects the files.
    An excluded path is decided on its name alone: it is never opened nor stat'ed through a link, so an
    excluded FIFO, broken link or unreadable file does not matter, and an excluded directory whose
    content no later include can reach is not walked. Directories are listed when they lead to a
    listed file, or when they are empty in the source and the rules publish them.

    ``source`` is a regular file (listed alone, under its name) or a directory (its content is listed,
    not the directory itself; sub-directories are listed as ``is_dir`` entries so empty ones can be kept
    in archives). A ``source`` that is a symlink is resolved. Inside a directory, symlinks whose target
    is inside the source are followed: a file link is listed as a regular file with its target's
    content, a directory link is walked. Only metadata is read.

    The order is code-point order of ``relpath``, which is also the UTF-8 byte order S3 lists keys in;
    a directory always comes before its content.

    Raises:
        SourceError: ``source`` is missing; something is unreadable, a FIFO, socket or device, a
            symlink loop, a broken symlink or a symlink out of the source; or a name is not UTF-8 or
            is one that fetching would refuse (a leading backslash, ``..`` between backslashes).
    """
    rules = file_filter if file_filter is not None else FileFilter()
    given = os.fspath(source)
    try:
        os.lstat(given)
    except FileNotFoundError:
        raise SourceError(f"source {given} does not exist; give an existing file or directory") from None
    except OSError as err:
        raise _metadata_error(given, err, link=False) from err
    try:
        st = os.stat(given)
    except OSError as err:
        raise _metadata_error(given, err, link=True) from err
    root = os.path.realpath(given)
    if stat.S_ISREG(st.st_mode):
        name = Path(given).name
        if not rules.includes_file(name):
            return []
        _check_name(name, given)
        _check_readable(root, given)
        return [_entry(root, name, st, is_dir=False)]
    if not stat.S_ISDIR(st.st_mode):
        raise _special_file_error(given, st.st_mode)
    empty_dirs: set[str] = set()
    entries = _walk(root, given, st, rules, empty_dirs)
    if rules.active:
        entries = _keep_needed_dirs(entries, rules, empty_dirs)
    entries.sort(key=lambda entry: entry.relpath)
    return entries


def _keep_needed_dirs(entries: list[SourceEntry], rules: FileFilter, empty_dirs: set[str]) -> list[SourceEntry]:
    """The files, the directories above them, and the empty source directories the rules publish."""
    needed: set[str] = set()
    leaves = [e.relpath for e in entries if not e.is_dir]
    leaves += [e.relpath for e in entries if e.is_dir and e.relpath in empty_dirs and rules.includes_dir(e.relpath)]
    for rel in leaves:
        parent = rel
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            needed.add(parent)
    needed.update(leaves)
    return [e for e in entries if not e.is_dir or e.relpath in needed]


@dataclass(frozen=True, slots=True)
class _Ancestors:
    """The (st_dev, st_ino) of a directory and of every directory above it in the walk."""

    key: tuple[int, int]
    parent: _Ancestors | None

    def __contains__(self, key: object) -> bool:
        node: _Ancestors | None = self
        while node is not None:
            if node.key == key:
                return True
            node = node.parent
        return False


def _walk(
    root: str, given: str, root_stat: os.stat_result, rules: FileFilter, empty_dirs: set[str]
) -> list[SourceEntry]:
    entries: list[SourceEntry] = []
    stack: list[tuple[str, str, _Ancestors]] = [(root, "", _Ancestors((root_stat.st_dev, root_stat.st_ino), None))]
    while stack:
        directory, rel_dir, ancestors = stack.pop()
        shown_dir = os.path.join(given, rel_dir) if rel_dir else given
        try:
            with os.scandir(directory) as listing:
                children = sorted(listing, key=lambda child: child.name)  # same error first, every run
        except OSError as err:
            raise _metadata_error(shown_dir, err, link=False, directory=True) from err
        if not children:
            empty_dirs.add(rel_dir)
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            shown = os.path.join(given, rel)
            # Excluded by name but maybe a directory with something publishable below (else skipped here).
            excluded = rules.active and not rules.includes_file(rel)
            if excluded and _excluded_unseen(child, rel, rules):
                continue
            _check_name(rel, shown)
            try:
                is_link = child.is_symlink()
                st = os.stat(child.path) if is_link else child.stat(follow_symlinks=False)
            except OSError as err:
                if excluded:
                    continue  # e.g. a broken link: no directory, so nothing below it to publish
                raise _metadata_error(shown, err, link=True) from err
            path = child.path
            if is_link:
                path = os.path.realpath(child.path)
                if not inside(path, root) and not (excluded and not stat.S_ISDIR(st.st_mode)):
                    raise SourceError(
                        f"{shown} is a symlink to {path}, outside the source directory {root}; links out of "
                        "the source are never followed (that could publish files nobody meant to). Copy "
                        "the file into the source, or make the link point inside it"
                    )
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise SourceError(
                        f"{shown} is a symlink loop: it leads back to a directory that contains it; "
                        "remove the link or point it elsewhere inside the source"
                    )
                entries.append(_entry(path, rel, st, is_dir=True))
                stack.append((path, rel, _Ancestors(key, ancestors)))
            elif excluded:
                continue  # a link to something other than a directory, excluded by its name
            elif stat.S_ISREG(st.st_mode):
                _check_readable(path, shown)
                entries.append(_entry(path, rel, st, is_dir=False))
            else:
                raise _special_file_error(shown, st.st_mode)
    return entries


def _excluded_unseen(child: os.DirEntry[str], rel: str, rules: FileFilter) -> bool:
    """Whether ``child``, excluded by its name, is left out before anything follows a link or reads it.

    It is kept for a closer look only if it may be a directory with something publishable below it
    (a directory, or a link that may lead to one, that the rules do not prune).
    """
    if rules.prunes_dir(rel):
        return True
    try:
        return not (child.is_symlink() or child.is_dir(follow_symlinks=False))
    except OSError:
        return False  # let the walk report it


def _entry(path: str, relpath: str, st: os.stat_result, *, is_dir: bool) -> SourceEntry:
    return SourceEntry(
        path=Path(path),
        relpath=relpath,
        size=0 if is_dir else st.st_size,
        mtime=st.st_mtime,
        mode=stat.S_IMODE(st.st_mode) & 0o777,
        is_dir=is_dir,
    )


def _shown(path: str) -> str:
    # Paths with undecodable bytes carry surrogates; show those bytes as \xNN.
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _check_name(relpath: str, shown: str) -> None:
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(
            f"the name of {_shown(shown)} is not valid UTF-8; S3 keys are UTF-8, so rename it "
            "(for example with convmv) before publishing"
        ) from None
    try:
        relpath_parts(relpath, what="name")
    except UnsafeArchiveError:
        # Fetching refuses such names (on Windows they climb out of the destination); refuse them here
        # so that nothing is published that cannot be fetched back.
        raise SourceError(
            f"the name of {_shown(shown)} starts with a backslash or has '..' between backslashes, which "
            "fetching refuses as unsafe; rename it before publishing"
        ) from None


def _check_readable(path: str, shown: str) -> None:
    if not os.access(path, os.R_OK):
        raise SourceError(
            f"{_shown(shown)} is not readable (permission denied); make it readable by the worker's user or "
            "leave it out of the source"
        )


def _metadata_error(shown: str, err: OSError, *, link: bool, directory: bool = False) -> SourceError:
    shown = _shown(shown)
    if err.errno == errno.ELOOP:
        return SourceError(f"{shown} is a symlink loop; remove the link or point it at a file or directory")
    if err.errno == errno.ENOENT and link:
        return SourceError(f"{shown} is a broken symlink (its target does not exist); fix or remove it")
    if err.errno in (errno.EACCES, errno.EPERM):
        what = "directory" if directory else "path"
        return SourceError(
            f"{what} {shown} is not readable (permission denied); make it readable by the worker's user "
            "or leave it out of the source"
        )
    return SourceError(f"cannot read {shown}: {err.strerror or err}")


def _special_file_error(shown: str, mode: int) -> SourceError:
    if stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode):
        kind = "a character device"
    elif stat.S_ISBLK(mode):
        kind = "a block device"
    else:
        kind = "not a regular file or directory"
    return SourceError(
        f"{_shown(shown)} is {kind}; only regular files and directories (and symlinks to them inside "
        "the source) can be published. Remove it from the source or publish a directory without it"
    )


def changed_error(entry: SourceEntry, detail: str) -> SourceError:
    """The error for a source file that changed after it was listed; ``detail`` says how."""
    return SourceError(
        f"{entry.path} changed while being published ({detail}); publish only files that are complete "
        "and no longer written to"
    )


def open_listed(entry: SourceEntry) -> io.FileIO:
    """Open a file of :func:`collect_source` for reading, refusing it if it changed since it was listed.

    Raises :class:`SourceError` when the file was removed, replaced (by a link or a non-regular file)
    or has another size or mtime. Read exactly ``entry.size`` bytes, then call :func:`check_unchanged`.
    """
    # O_NOFOLLOW: entry.path is fully resolved, so a link here was put in place after the listing.
    # O_NONBLOCK: a FIFO swapped in must not hang the open; the fstat below refuses it.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(entry.path, flags)
    except FileNotFoundError:
        raise changed_error(entry, "it was removed") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise changed_error(entry, "it was replaced by a symlink") from None
        raise SourceError(f"cannot open {entry.path}: {err.strerror or err}") from err
    handle = open(fd, "rb", buffering=0)  # noqa: SIM115 - returned to the caller, who closes it
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise changed_error(entry, "it is no longer a regular file")
        if before.st_size != entry.size or before.st_mtime != entry.mtime:
            raise changed_error(
                entry,
                f"listed with {entry.size} bytes and mtime {entry.mtime}, opened with "
                f"{before.st_size} bytes and mtime {before.st_mtime}",
            )
    except BaseException:
        handle.close()
        raise
    return handle


def check_unchanged(entry: SourceEntry, handle: io.FileIO, remaining: int) -> None:
    """After reading a file from :func:`open_listed`: refuse it if it ended early, grew or changed.

    ``remaining`` is how many of its listed bytes were not read (0 when all were).
    """
    if remaining:
        raise changed_error(entry, f"it ended {remaining} bytes early")
    if handle.read(1):
        raise changed_error(entry, f"it grew past its listed {entry.size} bytes")
    after = os.fstat(handle.fileno())
    if after.st_size != entry.size or after.st_mtime != entry.mtime:
        raise changed_error(entry, "its size or mtime changed while it was read")


def read_listed(entry: SourceEntry, buffer: memoryview, consume: Callable[[memoryview], object]) -> None:
    """Pass a file of :func:`collect_source` to ``consume`` chunk by chunk (views of ``buffer``, valid
    only during the call), refusing it if it changed since it was listed."""
    with open_listed(entry) as handle:
        remaining = entry.size
        while remaining:
            count = handle.readinto(buffer[: min(remaining, len(buffer))])
            if not count:
                break
            consume(buffer[:count])
            remaining -= count
        check_unchanged(entry, handle, remaining)


def hash_listed(entry: SourceEntry, chunk_size: int = 8 << 20) -> bytes:
    """SHA-256 of a file of :func:`collect_source`, refusing it if it changed since it was listed."""
    digest = hashlib.sha256()
    read_listed(entry, memoryview(bytearray(min(chunk_size, max(entry.size, 1)))), digest.update)
    return digest.digest()


def hash_listed_parts(entry: SourceEntry, part_size: int) -> tuple[bytes, list[bytes]]:
    """SHA-256 of a file of :func:`collect_source`, whole and per ``part_size``-byte part, in one read.

    The two are computed side by side (the part hashes in a helper thread; hashlib lets go of the GIL),
    so this takes about as long as :func:`hash_listed`. Refuses the file if it changed since it was listed.
    """
    whole = hashlib.sha256()
    parts = PartHashes(part_size)
    with ThreadPoolExecutor(1, thread_name_prefix="part-hash") as helper:

        def consume(chunk: memoryview) -> None:
            pending = helper.submit(parts.update, chunk)
            whole.update(chunk)
            pending.result()  # the chunk is reused once this returns

        read_listed(entry, memoryview(bytearray(min(part_size, max(entry.size, 1)))), consume)
    return whole.digest(), parts.digests()
