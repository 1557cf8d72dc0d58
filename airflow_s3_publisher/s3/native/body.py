"""A native GET's body read like boto3's: ``read(n)`` over obstore's chunks, failures as S3RequestError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_s3_publisher.exceptions import S3RequestError

__all__ = ["NativeBody"]


class NativeBody:
    """The streaming body of one object, received by obstore in chunks of about ``STREAM_CHUNK``.

    :param chunks: obstore's stream of the object's bytes.
    :param failed: turns an error obstore raised mid-body into the :class:`S3RequestError` to raise
        (mid-body failures are not retried, as on the boto3 path: the caller's bytes are already used).
    """

    def __init__(self, chunks: Iterator[Any], failed: Callable[[BaseException], S3RequestError]) -> None:
        self._chunks: Iterator[Any] | None = chunks
        self._failed = failed
        self._pending = memoryview(b"")
        self._error: S3RequestError | None = None  # a broken body stays broken: never read as its end

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (everything left when ``n`` is negative); ``b""`` at the end."""
        if n < 0:
            parts = [bytes(self._pending)]
            while chunk := self._next():
                parts.append(bytes(chunk))
            self._pending = memoryview(b"")
            return b"".join(parts)
        if not self._pending:
            self._pending = self._next()
        out, self._pending = self._pending[:n], self._pending[n:]
        return bytes(out)

    def _next(self) -> memoryview:
        if self._error is not None:
            raise self._error
        if self._chunks is None:
            return memoryview(b"")
        try:
            chunk = next(self._chunks, None)
        except Exception as err:
            self._chunks = None
            self._error = self._failed(err)
            raise self._error from err
        if chunk is None:
            self._chunks = None
            return memoryview(b"")
        return memoryview(chunk)

    def close(self) -> None:
        """Stop reading: the rest of the body is not received (the connection is dropped)."""
        self._chunks = None
        self._pending = memoryview(b"")
