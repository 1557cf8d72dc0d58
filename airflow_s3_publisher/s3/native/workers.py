"""The native engine's worker threads: each takes the next item when free, all stop at the first failure."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any

__all__ = ["ByteBudget", "run_each"]


def run_each(items: Iterable[Any], work: Callable[[Any, threading.Event], None], concurrency: int, name: str) -> None:
    """Run ``work(item, stop)`` for every item in ``concurrency`` threads (fewer for fewer items).

    Each thread takes the next item when it is free; on the first failure ``stop`` is set, no item
    is taken any more, and once the running ones are done the failure is raised.
    """
    iterator = iter(items)
    take = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def worker() -> None:
        while not stop.is_set():
            try:
                with take:
                    item = next(iterator, _END)
                if item is _END:
                    return
                work(item, stop)
            except BaseException as err:
                failures.append(err)
                stop.set()
                return

    known = _known_length(items)
    count = concurrency if known is None else max(1, min(concurrency, known))
    threads = [threading.Thread(target=worker, name=f"{name}-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # e.g. Airflow's task timeout in the main thread: start nothing new
        stop.set()
        raise
    if failures:
        raise failures[0]


_END = object()


def _known_length(items: Iterable[Any]) -> int | None:
    """How many items a list or other sized collection holds; None for a generator."""
    return len(items) if isinstance(items, Sized) else None


class ByteBudget:
    """Bounds the bytes of bodies held at once (one body always fits)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        with self._free:
            self._free.wait_for(lambda: self._used == 0 or self._used + size <= self._limit)
            self._used += size
        try:
            yield
        finally:
            with self._free:
                self._used -= size
                self._free.notify_all()
