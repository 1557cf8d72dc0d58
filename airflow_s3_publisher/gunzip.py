"""Decompressing a tar.gz stream for the extractors: the gzip CRC and length verified, the bytes inflated
ahead in a thread of its own, and runs of tar metadata bounded (a bomb hidden in headers).
"""

from __future__ import annotations

import io
from typing import Protocol

from airflow_s3_publisher.compression import CHUNK_SIZE, Backend
from airflow_s3_publisher.exceptions import FetchError, UnsafeArchiveError
from airflow_s3_publisher.readahead import ReadAhead

__all__ = ["GunzipReader", "Readable"]

# Tar metadata (headers, pax records, padding) read between two members or two data chunks. Real
# archives stay far below this; a bigger run is a bomb hidden in headers, which tarfile would buffer.
_MAX_METADATA_RUN = 8 << 20
# Inflate at least this much per call when reading a tar.gz (see GunzipReader.read).
_MIN_INFLATE = 256 << 10
# Chunks of _MIN_INFLATE inflated ahead of the reader at most (GunzipReader(ahead=True)).
_AHEAD_DEPTH = 8


class Readable(Protocol):
    """A stream of archive bytes. It is read to its end and never seeked or closed."""

    def read(self, n: int, /) -> bytes:
        """Return up to ``n`` bytes, or ``b""`` at the end."""


class _Inflater:
    """A gzip stream's decompressed bytes, ``read(n)`` inflating up to ``n`` of them at a time."""

    def __init__(self, raw: Readable, backend: Backend) -> None:
        self._raw = raw
        self._decompressor = backend.decompressor()
        self._error: type[Exception] = backend.module.error
        self._tail = b""

    def read(self, n: int, /) -> bytes:
        """Up to ``n`` decompressed bytes (``b""`` after the gzip trailer, which the backend verified)."""
        while not self._decompressor.eof:
            raw_ended = False
            if not self._tail:
                self._tail = self._raw.read(CHUNK_SIZE)
                raw_ended = not self._tail
            try:
                out = self._decompressor.decompress(self._tail, n)
            except self._error as err:
                raise FetchError(f"the archive is not valid gzip: {err}") from err
            self._tail = self._decompressor.unconsumed_tail
            if out:
                return out
            if raw_ended and not self._decompressor.eof:
                raise FetchError("the archive is truncated: its gzip stream ends early")
        return b""


class GunzipReader:
    """Decompresses a gzip stream on ``read()``; verifies its CRC and length; bounds metadata runs.

    With ``ahead=True`` a background thread inflates a few chunks ahead of the reader (zlib and ISA-L
    let other threads run), as ``tar -xz`` runs gzip in a process of its own; call :meth:`close` (or
    :meth:`finish`) to stop it. At most ``_AHEAD_DEPTH * _MIN_INFLATE`` bytes are held inflated.
    """

    def __init__(self, raw: Readable, backend: Backend, *, ahead: bool = False) -> None:
        self._raw = raw
        inflater = _Inflater(raw, backend)
        self._source: Readable = ReadAhead(inflater, chunk_size=_MIN_INFLATE, depth=_AHEAD_DEPTH) if ahead else inflater
        self._out = b""  # inflated, handed out from self._at on
        self._at = 0
        self._since_mark = 0
        self._member: str | None = None

    def mark(self, member: str) -> None:
        """Note that the extractor made progress (a header, a data chunk) in the member named ``member``."""
        self._since_mark = 0
        self._member = member

    @property
    def where(self) -> str:
        """Where the extractor last made progress, as an error message says it."""
        return "the start of the archive" if self._member is None else f"member {self._member!r}"

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decompressed bytes (``b""`` at the end of the gzip stream)."""
        if n <= 0:
            n = CHUNK_SIZE
        if self._at >= len(self._out):
            # Inflate at least _MIN_INFLATE at a time: tarfile reads 10 KiB, and each call copies the
            # whole unconsumed input (up to a CHUNK_SIZE) into unconsumed_tail.
            self._out, self._at = self._source.read(max(n, _MIN_INFLATE)), 0
        out = self._out[self._at : self._at + n]
        self._at += len(out)
        self._since_mark += len(out)
        if self._since_mark > _MAX_METADATA_RUN:
            raise UnsafeArchiveError(
                f"archive has more than {_MAX_METADATA_RUN} bytes of tar headers in a row after "
                f"{self.where}; refusing it as a decompression bomb"
            )
        return out

    # The rest of the file API that tarfile's type asks for; a stream is never written or seeked.
    def write(self, b: bytes, /) -> object:
        raise io.UnsupportedOperation("write")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")

    def seek(self, pos: int, /) -> object:
        raise io.UnsupportedOperation("seek")

    def close(self) -> None:
        """Stop inflating ahead (if it was) and wait for that thread; the raw stream is never closed."""
        if isinstance(self._source, ReadAhead):
            self._source.close()

    def finish(self) -> None:
        """Decompress the rest (verifying the gzip trailer), then read the raw stream to its end."""
        while self.read(CHUNK_SIZE):
            pass
        self.close()  # the raw stream is this thread's alone from here on
        while self._raw.read(CHUNK_SIZE):
            pass
