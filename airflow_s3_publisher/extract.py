"""Unpacking a tar.gz read from any stream with ``read()``, refusing anything that could leave the destination.

Pure logic: nothing here talks to S3; the caller can download and hash while bytes flow.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from airflow_s3_publisher.compression import CHUNK_SIZE, installed_backends
from airflow_s3_publisher.exceptions import FetchError, UnsafeArchiveError
from airflow_s3_publisher.gunzip import GunzipReader, Readable
from airflow_s3_publisher.paths import inside, member_parts

__all__ = [
    "DEFAULT_MAX_EXTRACT_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "ExtractStats",
    "ExtractGuard",
    "GunzipReader",
    "Member",
    "Members",
    "Readable",
    "extract_tar_gz",
]

DEFAULT_MAX_EXTRACT_BYTES = 64 << 30
"""Default cap on the bytes an archive may extract to (64 GiB)."""

DEFAULT_MAX_MEMBERS = 1_000_000
"""Default cap on the number of members an archive may hold."""


@dataclass(frozen=True, slots=True)
class ExtractStats:
    """What :func:`extract_tar_gz` extracted."""

    files: int
    """Regular files, hard links and symlinks."""
    directories: int
    """Directory members of the archive."""
    bytes: int
    """File content bytes written."""


class Member(Protocol):
    """What the extractor reads of a member: :class:`tarfile.TarInfo` has it, and so has the member type
    of any other tar parser put in front of :class:`ExtractGuard` (see :mod:`.extract_native`)."""

    @property
    def name(self) -> str: ...
    @property
    def linkname(self) -> str: ...
    @property
    def type(self) -> bytes: ...
    @property
    def mode(self) -> int: ...
    @property
    def mtime(self) -> float: ...
    @property
    def size(self) -> int: ...
    def isdir(self) -> bool: ...
    def isreg(self) -> bool: ...
    def issym(self) -> bool: ...
    def islnk(self) -> bool: ...
    def ischr(self) -> bool: ...
    def isblk(self) -> bool: ...
    def isfifo(self) -> bool: ...


class Members(Protocol):
    """A tar stream read front to back: its members in order, and the content of the current one.

    A :class:`tarfile.TarFile` opened in ``"r|"`` mode is one; so is the libarchive front end.
    """

    def next(self) -> Member | None: ...
    def extractfile(self, member: Any, /) -> Readable | None: ...


class _StrictTarInfo(tarfile.TarInfo):
    """A TarInfo that calls a corrupt header corrupt; tarfile would quietly end the archive there."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if len(buf) == tarfile.BLOCKSIZE and not any(buf):
            return super().frombuf(buf, encoding, errors)  # raises tarfile's end-of-archive error
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as err:
            raise FetchError(f"the archive is corrupt or truncated: bad tar header ({err})") from err


class _StreamingTarFile(tarfile.TarFile):
    """A TarFile that forgets members once read, so memory stays flat for any member count."""

    members: list[tarfile.TarInfo]
    tarinfo = _StrictTarInfo

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()
        return member


def process_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``); 0o777 where it cannot be
    read, so that every mode is then set explicitly."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


def extract_tar_gz(
    stream: Readable,
    destination: Path,
    *,
    max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> ExtractStats:
    """Extract a tar.gz read from ``stream`` into ``destination``, refusing anything unsafe.

    The stream is read once, front to back, to its very end (so a caller hashing it sees every byte);
    it is never seeked. The gzip CRC and length are verified. ``destination`` must be an existing,
    empty directory owned by the caller; on any error it may hold part of the archive and should be
    discarded, but nothing is ever written outside it.

    Refused with UnsafeArchiveError: absolute member names, ``..`` components, backslash ``..`` tricks,
    NUL in names, symlinks with an absolute target or one that resolves outside ``destination``,
    members written through a symlink, hard links to anything but an earlier regular file member,
    devices and FIFOs, more than ``max_members`` members or more than ``max_bytes`` extracted bytes
    (counted as written). Symlinks are created only after every other member, so nothing is written
    through them. Owners are not restored; setuid, setgid and sticky bits are dropped; files get
    ``mode & 0o777 | 0o600``, directories ``mode & 0o777 | 0o700``; mtimes are restored.

    Raises:
        UnsafeArchiveError: As above; the message names the member (or the limit and its parameter).
        FetchError: The stream is not gzip, is corrupt or is truncated.
        OSError: Writing into ``destination`` failed.
    """
    root = os.path.realpath(destination)
    if not os.path.isdir(root):
        raise NotADirectoryError(errno.ENOTDIR, "extraction destination is not a directory", str(destination))
    reader = GunzipReader(stream, installed_backends()[0], ahead=True)
    extractor = ExtractGuard(root, reader, max_bytes=max_bytes, max_members=max_members)
    try:
        with _StreamingTarFile.open(fileobj=reader, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            extractor.run(tar)
        reader.finish()
    except tarfile.TarError as err:
        raise FetchError(f"the archive is corrupt or truncated: {err}") from err
    finally:
        reader.close()
    return ExtractStats(files=extractor.files, directories=extractor.directories, bytes=extractor.bytes)


class ExtractGuard:
    """The guard every extraction goes through: checks each member, writes it, creates links last."""

    def __init__(self, root: str, reader: GunzipReader, *, max_bytes: int, max_members: int) -> None:
        self.root = root
        self.reader = reader
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.files = self.directories = self.bytes = self.members = 0
        self.made_dirs: set[str] = {""}  # relpaths of real directories in place ("" is the root)
        self.regular: set[str] = set()  # relpaths of regular files in place (hard link targets)
        self.links: dict[str, str] = {}  # symlinks to create at the end: relpath -> target
        self.dir_attrs: dict[str, tuple[int, float]] = {}
        self.umask = process_umask()

    def run(self, tar: Members) -> None:
        while (member := tar.next()) is not None:
            self.members += 1
            self.reader.mark(member.name)
            if self.members > self.max_members:
                raise UnsafeArchiveError(
                    f"archive has more than {self.max_members} members (at member {member.name!r}); "
                    "refusing it as a decompression bomb. Raise max_members if it is expected"
                )
            self._member(tar, member)
        self._make_links()
        for rel, (mode, mtime) in sorted(self.dir_attrs.items(), key=lambda item: -item[0].count("/")):
            path = self._path(rel)
            os.chmod(path, mode & 0o777 | 0o700)
            os.utime(path, (mtime, mtime))

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def _member(self, tar: Members, member: Member) -> None:
        name = member.name
        parts = member_parts(name)
        if not parts:
            if member.isdir():
                return  # "." or "./": the destination itself
            raise UnsafeArchiveError(f"archive member {name!r} has no name; refusing the archive")
        rel = "/".join(parts)
        for i in range(1, len(parts) if self.links else 0):
            prefix = "/".join(parts[:i])
            if prefix in self.links:
                raise UnsafeArchiveError(
                    f"archive member {name!r} would be written through the symlink {prefix!r}; refusing the archive"
                )
        if member.isdir():
            if rel in self.regular:
                raise UnsafeArchiveError(f"archive member {name!r} is a directory but an earlier member is a file")
            self.links.pop(rel, None)
            self._make_dirs(parts, name)
            self.dir_attrs[rel] = (member.mode, member.mtime)
            self.directories += 1
        elif member.isreg():
            self._replace(rel, name)
            self._make_dirs(parts[:-1], name)
            self._write_file(tar, member, rel)
            self.regular.add(rel)
            self.files += 1
        elif member.issym():
            self._check_symlink(member, rel)
            self._replace(rel, name)
            self._make_dirs(parts[:-1], name)
            self.links[rel] = member.linkname
            self.files += 1
        elif member.islnk():
            target = "/".join(member_parts(member.linkname, what=f"hard link target of {name!r}"))
            if target not in self.regular:
                raise UnsafeArchiveError(
                    f"archive member {name!r} is a hard link to {member.linkname!r}, which is not an earlier "
                    "regular file of the archive; refusing the archive"
                )
            self._replace(rel, name)
            self._make_dirs(parts[:-1], name)
            os.link(self._path(target), self._path(rel), follow_symlinks=False)
            self.regular.add(rel)
            self.files += 1
        else:
            if member.ischr():
                kind = "a character device"
            elif member.isblk():
                kind = "a block device"
            elif member.isfifo():
                kind = "a FIFO"
            else:
                kind = f"of unsupported type {member.type!r}"
            raise UnsafeArchiveError(f"archive member {name!r} is {kind}; refusing the archive")

    def _replace(self, rel: str, name: str) -> None:
        """Make room for a non-directory member at ``rel`` (a later member replaces an earlier one)."""
        if rel in self.made_dirs:
            raise UnsafeArchiveError(f"archive member {name!r} would replace a directory; refusing the archive")
        self.links.pop(rel, None)
        if rel in self.regular:
            os.unlink(self._path(rel))
            self.regular.discard(rel)

    def _make_dirs(self, parts: Sequence[str], name: str) -> None:
        if "/".join(parts) in self.made_dirs:  # made with all its parents (a directory is never replaced)
            return
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            if rel in self.made_dirs:
                continue
            if rel in self.regular:
                raise UnsafeArchiveError(f"archive member {name!r} needs {rel!r} as a directory but it is a file")
            path = self._path(rel)
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                # Not made by this extraction (the destination was not empty): use it only if it is a
                # real directory, never a symlink.
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise UnsafeArchiveError(
                        f"archive member {name!r} needs {rel!r} as a directory but something else is there"
                    ) from None
            self.made_dirs.add(rel)

    def _write_file(self, tar: Members, member: Member, rel: str) -> None:
        if member.size > self.max_bytes - self.bytes:
            raise self._too_big(member.name)
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - tarfile returns a reader for every regular member
            raise FetchError(f"cannot read archive member {member.name!r}")
        # O_EXCL and O_NOFOLLOW: never write into something that was already there, or through a link.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        mode = member.mode & 0o777 | 0o600
        fd = os.open(self._path(rel), flags, mode)
        try:  # os.write on the descriptor: a buffered file object per member costs more than its write
            written = 0
            while chunk := source.read(CHUNK_SIZE):
                if len(chunk) > self.max_bytes - self.bytes:
                    raise self._too_big(member.name)
                sent = os.write(fd, chunk)
                if sent < len(chunk):  # a short write (rare): the rest, a view at a time
                    view = memoryview(chunk)[sent:]
                    while view:
                        view = view[os.write(fd, view) :]
                written += len(chunk)
                self.bytes += len(chunk)
                self.reader.mark(member.name)
            if written != member.size:
                raise FetchError(f"the archive is truncated in member {member.name!r}")
            if mode & self.umask:  # created without the bits the umask took (the usual 0o644 is not)
                os.fchmod(fd, mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _too_big(self, name: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"archive extracts to more than max_bytes={self.max_bytes} bytes (at member {name!r}); refusing "
            "it as a decompression bomb. Raise max_bytes (max_extract_bytes when fetching) if it is expected"
        )

    def _check_symlink(self, member: Member, rel: str) -> None:
        target = member.linkname
        if not target or "\x00" in target:
            raise UnsafeArchiveError(f"archive member {member.name!r} is a symlink with an invalid target")
        if target.startswith("/"):
            raise UnsafeArchiveError(
                f"archive member {member.name!r} is a symlink to the absolute path {target!r}; refusing the archive"
            )
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(
                f"archive member {member.name!r} is a symlink to {target!r}, outside the destination; "
                "refusing the archive"
            )

    def _make_links(self) -> None:
        for rel, target in self.links.items():
            os.symlink(target, self._path(rel))
        # Checked again once all are in place: a chain of links (one to ".", another through it with
        # "..") can lead out although each target looked inside on its own.
        for rel, target in self.links.items():
            resolved = os.path.realpath(self._path(rel))
            if not inside(resolved, self.root):
                for created in self.links:
                    os.unlink(self._path(created))
                raise UnsafeArchiveError(
                    f"archive member {rel!r} is a symlink to {target!r}, which resolves to {resolved}, "
                    "outside the destination; refusing the archive"
                )
