"""Progress lines for long transfers: at a steady interval, never one per file."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class LogLike(Protocol):
    """What is needed of a logger: a ``logging.Logger`` or the operator's ``self.log``."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a transfer stands: bytes and files done, and their totals when known."""

    bytes: int
    total_bytes: int | None
    files: int
    total_files: int | None


ProgressCallback = Callable[[Snapshot], None]
"""Called with a :class:`Snapshot` as a transfer advances (from any transfer thread), e.g. to draw a bar."""


class Progress:
    """Thread-safe counters that log done/total, rate and ETA at most every ``interval`` seconds.

    ``on_update``, when given, also receives a :class:`Snapshot` at most every ``update_interval``
    seconds (the first ``add`` and :meth:`finish` always), outside the lock.
    """

    def __init__(
        self,
        what: str,
        *,
        total_bytes: int | None,
        total_files: int | None,
        logger: LogLike,
        interval: float = 10.0,
        on_update: ProgressCallback | None = None,
        update_interval: float = 0.1,
    ) -> None:
        self.what = what
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.bytes = 0
        self.files = 0
        self._logger = logger
        self._interval = interval
        self._on_update = on_update
        self._update_interval = update_interval
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self._next = self.started + interval
        self._next_update = self.started

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        """Count ``nbytes`` and ``files`` more; log a progress line when the interval has passed."""
        line = snapshot = None
        with self._lock:
            self.bytes += nbytes
            self.files += files
            now = time.monotonic()
            if self._on_update is not None and now >= self._next_update:
                self._next_update = now + self._update_interval
                snapshot = self._snapshot()
            if now >= self._next:
                self._next = now + self._interval
                line = self._line(now)
        if snapshot is not None and self._on_update is not None:
            self._on_update(snapshot)
        if line is not None:
            self._logger.info("%s", line)

    def finish(self) -> None:
        """Send the final counts to ``on_update`` (so a bar ends where the transfer did)."""
        if self._on_update is not None:
            with self._lock:
                snapshot = self._snapshot()
            self._on_update(snapshot)

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.bytes, self.total_bytes, self.files, self.total_files)

    def elapsed(self) -> float:
        """Seconds since the transfer started."""
        return time.monotonic() - self.started

    def _line(self, now: float) -> str:
        seconds = max(now - self.started, 1e-9)
        rate = self.bytes / seconds
        parts = [f"{self.what}: {_mb(self.bytes)}"]
        if self.total_bytes:
            parts[0] += f" of {_mb(self.total_bytes)} ({100 * self.bytes / self.total_bytes:.0f}%)"
        if self.total_files:
            parts.append(f"{self.files} of {self.total_files} files")
        parts.append(f"{rate / 1e6:.1f} MB/s")
        if self.total_bytes and rate > 0 and self.bytes < self.total_bytes:
            parts.append(f"ETA {(self.total_bytes - self.bytes) / rate:.0f} s")
        return ", ".join(parts)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
