"""Progress lines: at a steady interval with done/total, rate and ETA; never one per file."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from airflow_s3_publisher.progress import Progress, Snapshot

if TYPE_CHECKING:
    import pytest


def test_lines_come_at_the_interval_not_per_call(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("progress-test")
    progress = Progress("s3://b/k", total_bytes=10_000_000, total_files=1000, logger=logger, interval=0.2)
    with caplog.at_level(logging.INFO, logger="progress-test"):
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            progress.add(1000, 1)
            time.sleep(0.001)
    lines = [r.getMessage() for r in caplog.records]
    assert 1 <= len(lines) <= 3  # hundreds of files, two or so lines
    assert progress.files > 100
    line = lines[0]
    assert line.startswith("s3://b/k: ")
    assert "of 10.0 MB (" in line
    assert " of 1000 files" in line
    assert "MB/s" in line
    assert "ETA " in line


def test_updates_are_throttled_and_the_last_one_is_exact() -> None:
    seen: list[Snapshot] = []
    logger = logging.getLogger("progress-test")
    progress = Progress(
        "s3://b/k", total_bytes=5000, total_files=5, logger=logger, on_update=seen.append, update_interval=60.0
    )
    for _ in range(5):
        progress.add(1000, 1)
    assert seen == [Snapshot(1000, 5000, 1, 5)]  # the first call draws at once, the rest wait the interval
    progress.finish()
    assert seen[-1] == Snapshot(5000, 5000, 5, 5)


def test_updates_follow_the_transfer() -> None:
    seen: list[Snapshot] = []
    progress = Progress(
        "s3://b/k",
        total_bytes=None,
        total_files=None,
        logger=logging.getLogger("t"),
        on_update=seen.append,
        update_interval=0.0,
    )
    progress.add(10)
    progress.add(20)
    assert [s.bytes for s in seen] == [10, 30]
    assert seen[-1].total_bytes is None
