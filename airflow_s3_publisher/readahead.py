"""Reading a stream ahead in a background thread, so producing chunks overlaps the consumer's work.

Extraction inflates a tar.gz in a thread of its own (:class:`~airflow_s3_publisher.gunzip.GunzipReader`
with ``ahead=True``): that thread receives and hashes the download and inflates it, a few chunks ahead of
the thread that writes the files, as ``tar -xz`` runs gzip in a process of its own. :class:`ReadAhead`
is that hand-off: it reads the wrapped stream in a thread (socket reads, SHA-256 and zlib all let other
threads run) and hands the chunks over in order.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

    from airflow_s3_publisher.gunzip import Readable

DEFAULT_CHUNK = 1 << 20
DEFAULT_DEPTH = 8


class ReadAhead:
    """A Readable that reads ``raw`` ahead, in a background thread, up to ``depth`` chunks of ``chunk_size``.

    :param raw: the stream to read; only the background thread reads it until :meth:`close` returns,
        after which the caller may read it again (for example to drain it).
    :param chunk_size: bytes asked of ``raw`` per read.
    :param depth: chunks held at most (memory is about ``depth * chunk_size``).

    An exception raised by ``raw.read`` is raised again by :meth:`read`, in the consumer's thread, once
    the chunks read before it are consumed. Use as a context manager, or call :meth:`close`: it stops
    the thread and waits for it, so that ``raw`` is never read by two threads at once. Chunks read ahead
    but not consumed are dropped.
    """

    def __init__(self, raw: Readable, *, chunk_size: int = DEFAULT_CHUNK, depth: int = DEFAULT_DEPTH) -> None:
        if chunk_size <= 0 or depth <= 0:
            raise ValueError(f"chunk_size and depth must be positive, got {chunk_size} and {depth}")
        self._raw = raw
        self._chunk_size = chunk_size
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._pending = b""  # the chunk being handed out, from self._offset on
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="read-ahead", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        while not self._stop.is_set():
            item: bytes | BaseException
            try:
                item = self._raw.read(self._chunk_size)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
                item = err
            while not self._stop.is_set():
                try:
                    self._chunks.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, bytes) or not item:
                return

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (a whole chunk when ``n`` is negative), or ``b""`` at the end of ``raw``."""
        if self._offset == len(self._pending):
            if self._ended:
                return b""
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
                return b""
            self._pending, self._offset = item, 0
        start = self._offset
        if n < 0 or n >= len(self._pending) - start:
            self._offset = len(self._pending)
            return self._pending if start == 0 else self._pending[start:]
        self._offset = start + n
        return self._pending[start : start + n]

    def close(self) -> None:
        """Stop reading ahead, drop what was read ahead, and wait for the background thread (it finishes
        the read under way). :meth:`read` returns ``b""`` from then on."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._chunks.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.1)
        self._pending, self._offset = b"", 0
        self._ended = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
