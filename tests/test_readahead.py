"""ReadAhead: a stream read ahead in a background thread, handed over in order, never read by two threads."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from airflow_s3_publisher.readahead import ReadAhead


class Source:
    """A stream that records its reads, fails past ``fail_after`` bytes, and detects overlapping reads."""

    def __init__(self, data: bytes, *, fail_after: int | None = None, max_read: int | None = None) -> None:
        self._data = io.BytesIO(data)
        self._fail_after = fail_after
        self._max_read = max_read
        self._busy = threading.Lock()
        self.consumed = 0
        self.reads = 0
        self.overlaps = 0
        self.threads: set[str] = set()

    def read(self, n: int) -> bytes:
        if not self._busy.acquire(blocking=False):
            self.overlaps += 1
            self._busy.acquire()
        try:
            self.threads.add(threading.current_thread().name)
            self.reads += 1
            if self._fail_after is not None and self.consumed >= self._fail_after:
                raise ConnectionResetError("connection reset by peer (test)")
            chunk = self._data.read(n if self._max_read is None else min(n, self._max_read))
            self.consumed += len(chunk)
            return chunk
        finally:
            self._busy.release()


def read_all(stream: ReadAhead, n: int) -> bytes:
    parts = []
    while chunk := stream.read(n):
        parts.append(chunk)
    return b"".join(parts)


def no_read_ahead_thread() -> bool:
    return not any(thread.name == "read-ahead" for thread in threading.enumerate())


@pytest.mark.parametrize("n", [-1, 1, 1000, 4096, 1 << 20])
def test_hands_over_every_byte_in_order(n: int) -> None:
    data = os.urandom(300_000)
    source = Source(data, max_read=7777)
    with ReadAhead(source, chunk_size=10_000, depth=3) as stream:
        assert read_all(stream, n) == data
        assert stream.read(10) == b""  # and stays at the end
        assert stream.read(-1) == b""
    assert source.threads == {"read-ahead"}
    assert source.overlaps == 0
    assert no_read_ahead_thread()


def test_empty_stream() -> None:
    with ReadAhead(Source(b"")) as stream:
        assert stream.read(100) == b""


def test_an_error_comes_after_the_bytes_read_before_it() -> None:
    data = os.urandom(50_000)
    source = Source(data, fail_after=30_000)
    with ReadAhead(source, chunk_size=10_000) as stream:
        received = b""
        while len(received) < 30_000:
            received += stream.read(4096)
        assert received == data[:30_000]
        with pytest.raises(ConnectionResetError, match="test"):
            stream.read(4096)
        assert stream.read(10) == b""
    assert no_read_ahead_thread()


def test_reads_at_most_depth_chunks_ahead() -> None:
    source = Source(os.urandom(1 << 20))
    with ReadAhead(source, chunk_size=1000, depth=4) as stream:
        assert stream.read(10)
        time.sleep(0.3)  # the producer fills what it may, then waits
        # one chunk handed over, four queued, one read waiting for room
        assert source.reads <= 1 + 4 + 1


def test_after_close_the_caller_reads_on_where_the_thread_stopped() -> None:
    # fetch() drains the hashing reader after a failed extraction: every byte must be read exactly once.
    data = os.urandom(200_000)
    source = Source(data)
    stream = ReadAhead(source, chunk_size=8192, depth=2)
    first = stream.read(5000)
    stream.close()
    assert no_read_ahead_thread()
    assert stream.read(10) == b""
    rest = source.read(1 << 20)
    assert first == data[:5000]
    assert source.consumed == len(data)  # read ahead (and dropped) + read by the caller
    assert data.endswith(rest)
    assert source.overlaps == 0


def test_close_waits_for_a_read_under_way() -> None:
    class Slow(Source):
        def read(self, n: int) -> bytes:
            time.sleep(0.2)
            return super().read(n)

    source = Slow(os.urandom(100_000))
    stream = ReadAhead(source, chunk_size=1000)
    time.sleep(0.05)  # the thread is inside its first read
    stream.close()
    assert no_read_ahead_thread()
    assert source.overlaps == 0


@pytest.mark.parametrize(("chunk_size", "depth"), [(0, 1), (1, 0), (-5, 3)])
def test_refuses_sizes_that_are_not_positive(chunk_size: int, depth: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        ReadAhead(Source(b"x"), chunk_size=chunk_size, depth=depth)
