"""Listing a local source, streaming it into one tar.gz, and unpacking such an archive safely.

Pure logic: the standard library plus, when installed, a fast gzip binding. Nothing here talks to S3;
the archive writer writes to any sink with ``write()`` and the extractor reads from any stream with
``read()``, so the caller can hash and upload (or download and hash) while bytes flow.

gzip backends, fastest first: ``isal`` (python-isal, ``isal.isal_zlib``), ``zlib-ng``
(``zlib_ng.zlib_ng``), then the standard library's ``zlib``. All three write standard gzip that GNU
tar, gzip and :mod:`tarfile` read, and all three release the GIL while they compress, so a consumer
thread (hashing, uploading) runs alongside.

``compression_level`` is on zlib's scale: 0 stores (always done by stdlib zlib, because ISA-L has no
stored mode), 1 is fastest, 9 is smallest. Measured on 200 MB of generated CSV-like text, one core,
1 MiB chunks (isal 1.9.1, zlib-ng 1.1.0, CPython 3.11 zlib; a shared 2-core machine, so speeds are
good to about +-30%, ratios exact)::

    backend  level   time    speed       ratio
    zlib     1       1.60 s  125 MB/s    2.66
    zlib     2       1.96 s  102 MB/s    2.74
    zlib     3       3.24 s   62 MB/s    2.81
    zlib     6       6.44 s   31 MB/s    3.02
    zlib     9      10.99 s   18 MB/s    3.06
    isal     0       0.47 s  425 MB/s    2.25
    isal     1       0.49 s  409 MB/s    2.73
    isal     2       0.53 s  375 MB/s    2.76
    isal     3       0.77 s  260 MB/s    2.79
    zlib-ng  1       0.77 s  260 MB/s    2.01
    zlib-ng  2       1.38 s  146 MB/s    2.79
    zlib-ng  6       3.15 s   64 MB/s    3.03

Mapping of ``compression_level`` per backend; the default (``None``) is the fastest level whose ratio
is at least zlib level 1's:

* isal: default 1. 1 -> 1 (ratio 2.73, zlib 1: 2.66), 2 -> 2 (2.76, zlib 2: 2.74), 3..9 -> 3 (2.79,
  isal's best; zlib 3 gives 2.81, zlib 9 3.06, so 9 costs ~9% more bytes but runs 14x faster).
  isal level 0 is never used: its ratio is worse than zlib 1's.
* zlib-ng: default 2 (its level 1 has a much worse ratio than zlib 1); 1..9 as given.
* zlib: default 1; 1..9 as given.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from airflow_s3_publisher.exceptions import FetchError, InvalidSpecError, SourceError, UnsafeArchiveError

CHUNK_SIZE = 1 << 20
"""Bytes read from a file, or written to one, at a time."""

DEFAULT_MAX_EXTRACT_BYTES = 64 << 30
"""Default cap on the bytes an archive may extract to (64 GiB)."""

DEFAULT_MAX_MEMBERS = 1_000_000
"""Default cap on the number of members an archive may hold."""

# Tar metadata (headers, pax records, padding) read between two members or two data chunks. Real
# archives stay far below this; a bigger run is a bomb hidden in headers, which tarfile would buffer.
_MAX_METADATA_RUN = 8 << 20
# Inflate at least this much per call when reading a tar.gz (see _GunzipReader.read).
_MIN_INFLATE = 256 << 10
# Compress small pieces (tar headers, small files) in batches, so each call releases the GIL for a while.
_BATCH = 256 << 10
_GZIP_WBITS = 31  # deflate in a gzip container; header mtime 0, no file name


class Writable(Protocol):
    """A sink for the archive bytes (for example a multipart uploader). It is never seeked or closed."""

    def write(self, b: bytes | memoryview, /) -> object:
        """Take all of ``b``."""


class Readable(Protocol):
    """A stream of archive bytes. It is read to its end and never seeked or closed."""

    def read(self, n: int, /) -> bytes:
        """Return up to ``n`` bytes, or ``b""`` at the end."""


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


@dataclass(frozen=True, slots=True)
class ArchiveStats:
    """What :func:`write_tar_gz` wrote."""

    files: int
    directories: int
    content_bytes: int
    """Uncompressed bytes of the files."""
    archive_bytes: int
    """Compressed bytes written to the sink."""
    gzip_backend: str
    """For example ``"isal level 1"``; see :func:`gzip_backend`."""


@dataclass(frozen=True, slots=True)
class ExtractStats:
    """What :func:`extract_tar_gz` extracted."""

    files: int
    """Regular files, hard links and symlinks."""
    directories: int
    """Directory members of the archive."""
    bytes: int
    """File content bytes written."""


# --------------------------------------------------------------------------------------------------
# Listing a source


def collect_source(source: str | os.PathLike[str]) -> list[SourceEntry]:
    """List the files and directories to publish from ``source``, sorted by relpath.

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
        _check_name(name, given)
        _check_readable(root, given)
        return [_entry(root, name, st, is_dir=False)]
    if not stat.S_ISDIR(st.st_mode):
        raise _special_file_error(given, st.st_mode)
    entries = _walk(root, given, st)
    entries.sort(key=lambda entry: entry.relpath)
    return entries


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


def _walk(root: str, given: str, root_stat: os.stat_result) -> list[SourceEntry]:
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
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            shown = os.path.join(given, rel)
            _check_name(rel, shown)
            try:
                is_link = child.is_symlink()
                st = os.stat(child.path) if is_link else child.stat(follow_symlinks=False)
            except OSError as err:
                raise _metadata_error(shown, err, link=True) from err
            path = child.path
            if is_link:
                path = os.path.realpath(child.path)
                if not _inside(path, root):
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
            elif stat.S_ISREG(st.st_mode):
                _check_readable(path, shown)
                entries.append(_entry(path, rel, st, is_dir=False))
            else:
                raise _special_file_error(shown, st.st_mode)
    return entries


def _entry(path: str, relpath: str, st: os.stat_result, *, is_dir: bool) -> SourceEntry:
    return SourceEntry(
        path=Path(path),
        relpath=relpath,
        size=0 if is_dir else st.st_size,
        mtime=st.st_mtime,
        mode=stat.S_IMODE(st.st_mode) & 0o777,
        is_dir=is_dir,
    )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


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
        _relpath_parts(relpath, what="name")
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


# --------------------------------------------------------------------------------------------------
# gzip backends


class _Compressor(Protocol):
    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...
    def flush(self) -> bytes: ...


class _Decompressor(Protocol):
    unconsumed_tail: bytes
    eof: bool

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Backend:
    name: str
    module: Any  # the module's zlib-like API: compressobj, decompressobj, error, DEFLATED
    default_level: int
    levels: tuple[int, ...]  # native level for zlib levels 1..9

    def compressor(self, native_level: int) -> _Compressor:
        compressor: _Compressor = self.module.compressobj(native_level, self.module.DEFLATED, _GZIP_WBITS)
        return compressor

    def decompressor(self) -> _Decompressor:
        decompressor: _Decompressor = self.module.decompressobj(_GZIP_WBITS)
        return decompressor


_STDLIB = _Backend("zlib", zlib, 1, (1, 2, 3, 4, 5, 6, 7, 8, 9))


def _load_backends() -> tuple[_Backend, ...]:
    found: list[_Backend] = []
    try:
        from isal import isal_zlib
    except ImportError:
        pass
    else:
        found.append(_Backend("isal", isal_zlib, 1, (1, 2, 3, 3, 3, 3, 3, 3, 3)))
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        found.append(_Backend("zlib-ng", zlib_ng, 2, (1, 2, 3, 4, 5, 6, 7, 8, 9)))
    found.append(_STDLIB)
    return tuple(found)


# Installed backends, preferred first; the first one is used (tests replace this to force one).
_BACKENDS = _load_backends()


def check_compression_level(level: object) -> None:
    """Refuse a ``compression_level`` that is not None or an integer 0-9 (zlib's scale)."""
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9):
        raise InvalidSpecError(
            f"compression_level must be an integer from 0 (store) through 1 (fastest) to 9 (smallest), "
            f"or None for the fast default; got {level!r}"
        )


def _select(level: int | None) -> tuple[_Backend, int]:
    check_compression_level(level)
    if level == 0:
        return _STDLIB, 0
    backend = _BACKENDS[0]
    return backend, backend.default_level if level is None else backend.levels[level - 1]


def gzip_backend(level: int | None = None) -> str:
    """Name the gzip implementation and its native level used for ``level``, e.g. ``"isal level 1"``.

    ``level`` is on zlib's 0-9 scale (``None`` for the default); see the module docstring for the
    mapping. Raises InvalidSpecError for a level outside 0-9.
    """
    backend, native = _select(level)
    return f"{backend.name} level {native}"


# --------------------------------------------------------------------------------------------------
# Writing


class _GzipSink:
    """Compresses tar bytes into ``out``, counting what goes in and what comes out."""

    def __init__(self, out: Writable, compressor: _Compressor) -> None:
        self._out = out
        self._compressor = compressor
        self._pending = bytearray()
        self.tar_bytes = 0
        self.archive_bytes = 0

    def write(self, data: bytes | memoryview) -> None:
        self.tar_bytes += len(data)
        if len(data) >= _BATCH:
            self._compress_pending()
            self._emit(self._compressor.compress(data))
            return
        self._pending += data
        if len(self._pending) >= _BATCH:
            self._compress_pending()

    def finish(self) -> None:
        self._compress_pending()
        self._emit(self._compressor.flush())

    def _compress_pending(self) -> None:
        if self._pending:
            self._emit(self._compressor.compress(self._pending))
            self._pending.clear()

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.archive_bytes += len(data)


def write_tar_gz(
    entries: Sequence[SourceEntry],
    out: Writable,
    *,
    compression_level: int | None = None,
    on_progress: Callable[[int, int], object] | None = None,
) -> ArchiveStats:
    """Stream ``entries`` as one deterministic PAX tar.gz into ``out``.

    Member names are the relpaths (the archive root is the content of the source). Headers carry
    uid/gid 0, empty owner names and whole-second mtimes; the gzip header has mtime 0 and no file
    name; so the same entries with the same content and metadata always give the same bytes (for a
    given gzip backend and level). Files are read and compressed in chunks of :data:`CHUNK_SIZE`;
    nothing is held whole. ``out`` is written to, never seeked or closed.

    Args:
        entries: What to pack, usually from :func:`collect_source`; directories are kept as members.
        out: The sink for the compressed bytes.
        compression_level: zlib's 0-9 scale, ``None`` for the fast default (see the module docstring).
        on_progress: Called with ``(content_bytes, 0)`` after each chunk and ``(0, 1)`` after each file.

    Raises:
        SourceError: A file cannot be opened, or changed (size, mtime, type) since it was listed or
            while it was read.
        InvalidSpecError: ``compression_level`` is not valid.
        OSError and anything ``out.write`` raises: propagated, so a truncated archive never looks
            complete.
    """
    backend, native = _select(compression_level)
    sink = _GzipSink(out, backend.compressor(native))
    buffer = memoryview(bytearray(CHUNK_SIZE))
    files = directories = content_bytes = 0
    for entry in entries:
        sink.write(_header(entry))
        if entry.is_dir:
            directories += 1
            continue
        _copy_file(entry, sink, buffer, on_progress)
        if entry.size % tarfile.BLOCKSIZE:
            sink.write(bytes(tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE))
        files += 1
        content_bytes += entry.size
        if on_progress is not None:
            on_progress(0, 1)
    # End of archive: two zero blocks, then zeros up to a whole record, as tarfile and GNU tar write.
    end = 2 * tarfile.BLOCKSIZE
    end += -(sink.tar_bytes + end) % tarfile.RECORDSIZE
    sink.write(bytes(end))
    sink.finish()
    return ArchiveStats(
        files=files,
        directories=directories,
        content_bytes=content_bytes,
        archive_bytes=sink.archive_bytes,
        gzip_backend=f"{backend.name} level {native}",
    )


def _header(entry: SourceEntry) -> bytes:
    info = tarfile.TarInfo(entry.relpath)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.size = 0 if entry.is_dir else entry.size
    # Whole seconds: a float mtime would add a pax header to every member.
    info.mtime = int(entry.mtime)
    info.mode = entry.mode & 0o777
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


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


def _copy_file(
    entry: SourceEntry,
    sink: _GzipSink,
    buffer: memoryview,
    on_progress: Callable[[int, int], object] | None,
) -> None:
    def copy(chunk: memoryview) -> None:
        sink.write(chunk)
        if on_progress is not None:
            on_progress(len(chunk), 0)

    read_listed(entry, buffer, copy)


# --------------------------------------------------------------------------------------------------
# Extracting


class _GunzipReader:
    """Decompresses a gzip stream on ``read()``; verifies its CRC and length; bounds metadata runs."""

    def __init__(self, raw: Readable, backend: _Backend) -> None:
        self._raw = raw
        self._decompressor = backend.decompressor()
        self._error: type[Exception] = backend.module.error
        self._tail = b""
        self._out = b""  # inflated, handed out from self._at on
        self._at = 0
        self._since_mark = 0
        self.where = "the start of the archive"

    def mark(self, where: str) -> None:
        """Note that the extractor made progress (a member, a data chunk) at ``where``."""
        self._since_mark = 0
        self.where = where

    def read(self, n: int = -1) -> bytes:
        if n <= 0:
            n = CHUNK_SIZE
        if self._at >= len(self._out):
            # Inflate at least _MIN_INFLATE at a time: tarfile reads 10 KiB, and each call copies the
            # whole unconsumed input (up to a CHUNK_SIZE) into unconsumed_tail.
            self._out, self._at = self._inflate(max(n, _MIN_INFLATE)), 0
        out = self._out[self._at : self._at + n]
        self._at += len(out)
        self._since_mark += len(out)
        if self._since_mark > _MAX_METADATA_RUN:
            raise UnsafeArchiveError(
                f"archive has more than {_MAX_METADATA_RUN} bytes of tar headers in a row after "
                f"{self.where}; refusing it as a decompression bomb"
            )
        return out

    def _inflate(self, n: int) -> bytes:
        while not self._decompressor.eof:
            raw_ended = False
            if not self._tail:
                self._tail = self._raw.read(CHUNK_SIZE)
                raw_ended = not self._tail
            out = self._decompress(n)
            if out:
                return out
            if raw_ended and not self._decompressor.eof:
                raise FetchError("the archive is truncated: its gzip stream ends early")
        return b""

    def _decompress(self, n: int) -> bytes:
        try:
            out = self._decompressor.decompress(self._tail, n)
        except self._error as err:
            raise FetchError(f"the archive is not valid gzip: {err}") from err
        self._tail = self._decompressor.unconsumed_tail
        return out

    # The rest of the file API that tarfile's type asks for; a stream is never written, seeked or closed.
    def write(self, b: bytes, /) -> object:
        raise io.UnsupportedOperation("write")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")

    def seek(self, pos: int, /) -> object:
        raise io.UnsupportedOperation("seek")

    def close(self) -> None:
        pass

    def finish(self) -> None:
        """Decompress the rest (verifying the gzip trailer), then read the raw stream to its end."""
        while self.read(CHUNK_SIZE):
            pass
        while self._raw.read(CHUNK_SIZE):
            pass


class _Member(Protocol):
    """What the extractor reads of a member: :class:`tarfile.TarInfo` has it, and so has the member type
    of any other tar parser put in front of :class:`_Extractor` (see :mod:`.extract_native`)."""

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


class _Members(Protocol):
    """A tar stream read front to back: its members in order, and the content of the current one.

    A :class:`tarfile.TarFile` opened in ``"r|"`` mode is one; so is the libarchive front end.
    """

    def next(self) -> _Member | None: ...
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
    reader = _GunzipReader(stream, _BACKENDS[0])
    extractor = _Extractor(root, reader, max_bytes=max_bytes, max_members=max_members)
    try:
        with _StreamingTarFile.open(fileobj=reader, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            extractor.run(tar)
    except tarfile.TarError as err:
        raise FetchError(f"the archive is corrupt or truncated: {err}") from err
    reader.finish()
    return ExtractStats(files=extractor.files, directories=extractor.directories, bytes=extractor.bytes)


class _Extractor:
    def __init__(self, root: str, reader: _GunzipReader, *, max_bytes: int, max_members: int) -> None:
        self.root = root
        self.reader = reader
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.files = self.directories = self.bytes = self.members = 0
        self.made_dirs: set[str] = {""}  # relpaths of real directories in place ("" is the root)
        self.regular: set[str] = set()  # relpaths of regular files in place (hard link targets)
        self.links: dict[str, str] = {}  # symlinks to create at the end: relpath -> target
        self.dir_attrs: dict[str, tuple[int, float]] = {}

    def run(self, tar: _Members) -> None:
        while (member := tar.next()) is not None:
            self.members += 1
            self.reader.mark(f"member {member.name!r}")
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

    def _member(self, tar: _Members, member: _Member) -> None:
        name = member.name
        parts = _member_parts(name)
        if not parts:
            if member.isdir():
                return  # "." or "./": the destination itself
            raise UnsafeArchiveError(f"archive member {name!r} has no name; refusing the archive")
        rel = "/".join(parts)
        for i in range(1, len(parts)):
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
            target = "/".join(_member_parts(member.linkname, what=f"hard link target of {name!r}"))
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

    def _write_file(self, tar: _Members, member: _Member, rel: str) -> None:
        if member.size > self.max_bytes - self.bytes:
            raise self._too_big(member.name)
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - tarfile returns a reader for every regular member
            raise FetchError(f"cannot read archive member {member.name!r}")
        # O_EXCL and O_NOFOLLOW: never write into something that was already there, or through a link.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path(rel), flags, 0o600)
        try:  # os.write on the descriptor: a buffered file object per member costs more than its write
            written = 0
            where = f"member {member.name!r}"
            while chunk := source.read(CHUNK_SIZE):
                if len(chunk) > self.max_bytes - self.bytes:
                    raise self._too_big(member.name)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(chunk)
                self.bytes += len(chunk)
                self.reader.mark(where)
            if written != member.size:
                raise FetchError(f"the archive is truncated in member {member.name!r}")
            os.fchmod(fd, member.mode & 0o777 | 0o600)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _too_big(self, name: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"archive extracts to more than max_bytes={self.max_bytes} bytes (at member {name!r}); refusing "
            "it as a decompression bomb. Raise max_bytes (max_extract_bytes when fetching) if it is expected"
        )

    def _check_symlink(self, member: _Member, rel: str) -> None:
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
            if not _inside(resolved, self.root):
                for created in self.links:
                    os.unlink(self._path(created))
                raise UnsafeArchiveError(
                    f"archive member {rel!r} is a symlink to {target!r}, which resolves to {resolved}, "
                    "outside the destination; refusing the archive"
                )


def _member_parts(name: str, *, what: str = "archive member") -> tuple[str, ...]:
    """Split a tar member name into safe components; ``()`` for the archive root ("." or "./")."""
    if name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{what} {name!r} has an absolute path; refusing the archive")
    stripped = name
    while stripped.startswith("./"):
        stripped = stripped[2:]
    stripped = stripped.rstrip("/")
    if stripped in ("", "."):
        return ()
    return _relpath_parts(stripped, what=what)


def _relpath_parts(relpath: str, *, what: str) -> tuple[str, ...]:
    if not relpath:
        raise UnsafeArchiveError(f"{what} is empty; it names no file under the destination")
    if "\x00" in relpath:
        raise UnsafeArchiveError(f"{what} {relpath!r} contains a NUL character")
    if relpath.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{what} {relpath!r} is an absolute path; only relative paths are allowed")
    parts = tuple(relpath.split("/"))
    for part in parts:
        if part in ("", "."):
            raise UnsafeArchiveError(f"{what} {relpath!r} has an empty or '.' path component")
        # ".." split on backslashes too: "..\\x" would climb out wherever backslash is a separator.
        if ".." in part.split("\\"):
            raise UnsafeArchiveError(f"{what} {relpath!r} has a '..' component that would leave the destination")
    return parts


def safe_join(destination: Path, relpath: str) -> Path:
    """Map a POSIX path relative to an S3 prefix (an object key's suffix) to a path under ``destination``.

    Raises:
        UnsafeArchiveError: ``relpath`` is empty, absolute, contains NUL, an empty or ``.`` component,
            or a ``..`` component (also between backslashes), so it could not safely name a file
            strictly under ``destination``.
    """
    return Path(destination).joinpath(*_relpath_parts(relpath, what="object key suffix"))
