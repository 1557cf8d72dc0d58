"""Streaming a listed source into one deterministic tar.gz, written to any sink with ``write()``.

Pure logic: nothing here talks to S3; the caller can hash and upload while bytes flow.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from airflow_s3_publisher.compression import CHUNK_SIZE, Compressor, select_backend
from airflow_s3_publisher.sources import SourceEntry, read_listed

__all__ = ["ArchiveStats", "Writable", "write_tar_gz"]

# Compress small pieces (tar headers, small files) in batches, so each call releases the GIL for a while.
_BATCH = 256 << 10


class Writable(Protocol):
    """A sink for the archive bytes (for example a multipart uploader). It is never seeked or closed."""

    def write(self, b: bytes | memoryview, /) -> object:
        """Take all of ``b``."""


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


class _GzipSink:
    """Compresses tar bytes into ``out``, counting what goes in and what comes out."""

    def __init__(self, out: Writable, compressor: Compressor) -> None:
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
    backend, native = select_backend(compression_level)
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
    fast = _ustar_header(entry)
    return fast if fast is not None else _pax_header(entry)


def _pax_header(entry: SourceEntry) -> bytes:
    info = tarfile.TarInfo(entry.relpath)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.size = 0 if entry.is_dir else entry.size
    # Whole seconds: a float mtime would add a pax header to every member.
    info.mtime = int(entry.mtime)
    info.mode = entry.mode & 0o777
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _template(is_dir: bool) -> bytes:
    return _pax_header(SourceEntry(path=Path("x"), relpath="x", size=0, mtime=0, mode=0, is_dir=is_dir))


# What tarfile writes for a member that needs no pax record (an ASCII name of at most 100 bytes, numbers
# that fit): a plain ustar header. Taken from tarfile itself, so that only the fields that vary are filled
# in below: 37 us per member in tarfile, most of a 10,000-file archive's Python time.
_TEMPLATES = {False: _template(False), True: _template(True)}
_OCTAL_11 = 8**11


def _ustar_header(entry: SourceEntry) -> bytes | None:
    """The header tarfile would write for ``entry`` when it needs no pax record, else None."""
    name = entry.relpath + "/" if entry.is_dir else entry.relpath
    size = 0 if entry.is_dir else entry.size
    mtime = int(entry.mtime)
    if len(name) > 100 or not name.isascii() or not (0 <= size < _OCTAL_11 and 0 <= mtime < _OCTAL_11):
        return None
    block = bytearray(_TEMPLATES[entry.is_dir])
    block[0:100] = name.encode("ascii").ljust(100, b"\0")
    block[100:108] = b"%07o\0" % (entry.mode & 0o777)
    block[124:148] = b"%011o\0%011o\0" % (size, mtime)
    block[148:156] = b"        "  # the checksum counts its own field as spaces
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


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
