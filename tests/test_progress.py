"""Progress lines: at a steady interval with done/total, rate and ETA; never one per file."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from airflow_s3_publisher.progress import Progress

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
