"""Streams that hash every byte passing through them, and the base64 form S3 writes digests in.

Pure logic: the standard library only.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

__all__ = ["HashingReader", "HashingWriter", "PartHashes", "b64"]

#: Bytes read at a time when draining a stream.
_CHUNK = 1 << 20


def b64(digest: bytes) -> str:
    """Base64 text of a digest, as S3 writes checksums."""
    return base64.b64encode(digest).decode("ascii")


class HashingWriter:
    """Writes to a stream while hashing every byte written (and counting them)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        """Write all of ``data``."""
        self._raw.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    @property
    def sha256(self) -> bytes:
        """SHA-256 of everything written so far."""
        return bytes(self._hash.digest())


class HashingReader:
    """Reads from a stream while hashing every byte read (and counting them)."""

    def __init__(self, raw: Any, on_bytes: Callable[[int], None] | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all when negative)."""
        data: bytes = self._raw.read(n) if n is not None and n >= 0 else self._raw.read()
        self._hash.update(data)
        self.size += len(data)
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data

    def drain(self, chunk: int = _CHUNK) -> None:
        """Read (and hash) everything that is left."""
        while self.read(chunk):
            pass

    @property
    def sha256(self) -> bytes:
        """SHA-256 of everything read so far."""
        return bytes(self._hash.digest())


class PartHashes:
    """SHA-256 of each ``part_size``-byte part of a stream (the last part may be shorter).

    What a multipart upload sends as each part's checksum, computed while the stream is read for
    another purpose: bytes may arrive in chunks of any size.
    """

    def __init__(self, part_size: int) -> None:
        if part_size <= 0:
            raise ValueError(f"part_size must be positive, not {part_size}")
        self._part_size = part_size
        self._hash = hashlib.sha256()
        self._filled = 0
        self._done: list[bytes] = []

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Hash ``data``, closing each part as it fills."""
        view = memoryview(data).cast("B")
        while view:
            take = min(self._part_size - self._filled, len(view))
            self._hash.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._part_size:
                self._done.append(self._hash.digest())
                self._hash, self._filled = hashlib.sha256(), 0

    def digests(self) -> list[bytes]:
        """The parts' digests so far, the part being filled included if it holds any byte."""
        return [*self._done, self._hash.digest()] if self._filled else list(self._done)
