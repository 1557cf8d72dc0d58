"""Streams that hash every byte passing through them, and the base64 form S3 writes digests in.

Pure logic: the standard library only.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

__all__ = ["HashingReader", "HashingWriter", "b64"]

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
