"""Cancelling a publish in flight (what ``on_kill`` does), against SeaweedFS behind a throttling proxy.

The publish runs in a thread and talks to the store through :class:`tests.faultproxy.FaultProxy`, which
slows request bodies down so that the upload is still in flight when the test cancels it. The outcome is
read on SeaweedFS directly: no object, no incomplete multipart upload, no manifest.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_s3_publisher import PublishedResult, publish
from airflow_s3_publisher.cancel import Cancellation
from airflow_s3_publisher.exceptions import PublishError
from airflow_s3_publisher.manifest import MANIFEST_NAME
from airflow_s3_publisher.options import MiB, TransferOptions
from tests.faultproxy import FaultProxy, ProxyStats, running_proxy
from tests.support import make_tree, objects_below, use_connection
from tools.seaweed import ADMIN, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.timeout(120)

PART = 5 * MiB
TRANSFER = TransferOptions(part_size=PART, multipart_threshold=PART, concurrency=4, max_attempts=1)
#: Request bodies per connection: a 5 MiB part takes about a second.
THROTTLE = 5_000_000
WAIT = 60.0


@pytest.fixture(scope="module", autouse=True)
def airflow_logging_configured() -> None:
    """Import the amazon provider's S3Hook first (it replaces the root logger's handlers; see test_faults)."""
    import airflow.providers.amazon.aws.hooks.s3  # noqa: F401


@pytest.fixture
def slow_proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    with running_proxy(seaweed.endpoint, upload_bytes_per_second=THROTTLE) as proxy:
        yield proxy


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    return use_connection(monkeypatch, "s3_cancel", seaweed, ADMIN)


class Publishing:
    """publish() running in a thread; its result or its error once joined."""

    def __init__(self, **kwargs: Any) -> None:
        self.result: PublishedResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, kwargs=kwargs, name="test-publish")
        self._thread.start()

    def _run(self, **kwargs: Any) -> None:
        try:
            self.result = publish(**kwargs)
        except BaseException as err:
            self.error = err

    def __repr__(self) -> str:
        return f"<publish thread alive={self._thread.is_alive()} result={self.result} error={self.error!r}>"

    def join(self) -> None:
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the publish did not stop after it was cancelled"


def wait_until(proxy: FaultProxy, running: Publishing, what: str, predicate: Callable[[ProxyStats], bool]) -> None:
    assert proxy.wait_for(predicate, WAIT), f"the proxy never saw {what}: {proxy.stats()}, {running}"


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(path.name).randbytes(size))  # incompressible: the archive is as large
    return path


def incomplete_uploads(s3: S3Client, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def part_threads() -> list[str]:
    """Upload threads still alive, once those that were sending a part have ended (S3 refuses the part
    of an aborted upload at its end; the publish does not wait for them)."""
    for thread in threading.enumerate():
        if thread.name.startswith(("s3-part", "s3-put")):
            thread.join(WAIT)
    return [t.name for t in threading.enumerate() if t.name.startswith(("s3-part", "s3-put"))]


@pytest.mark.parametrize("spool", [False, True], ids=["streamed", "spooled"])
def test_cancel_aborts_a_large_archive_in_flight(
    spool: bool, tmp_path: Path, bucket: str, conn: str, slow_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    source = random_file(tmp_path / "out" / "big.bin", 40 * MiB)
    cancellation = Cancellation()
    transfer = dataclasses.replace(TRANSFER, spool_archives=spool)
    running = Publishing(
        source=source.parent,
        bucket=bucket,
        key="runs/big",
        compress=True,
        endpoint=slow_proxy.endpoint,
        aws_conn_id=conn,
        transfer=transfer,
        cancellation=cancellation,
    )
    wait_until(slow_proxy, running, "a part on its way", lambda s: s.bytes_up > PART)
    assert incomplete_uploads(s3_admin, bucket) != []  # the upload really is in flight
    cancellation.cancel("the test pulled the switch")
    # cancel() returns once the abort was sent, before the parts being sent have ended.
    assert incomplete_uploads(s3_admin, bucket) == []
    running.join()

    assert running.result is None
    assert isinstance(running.error, PublishError)
    message = str(running.error)
    assert "publishing was cancelled (the test pulled the switch)" in message
    assert f"aborted s3://{bucket}/runs/big.tar.gz (upload " in message
    assert cancellation.aborted
    assert cancellation.aborted[0].startswith(f"s3://{bucket}/runs/big.tar.gz (upload ")
    assert incomplete_uploads(s3_admin, bucket) == []
    assert objects_below(s3_admin, bucket) == {}
    assert part_threads() == []
    ops = slow_proxy.stats().operations
    assert ops.get("CompleteMultipartUpload", 0) == 0
    assert ops.get("UploadPart", 0) < 8  # 40 MiB are 8 parts: the queued ones were never sent


def test_cancel_stops_a_plain_publish_before_its_manifest(
    tmp_path: Path, bucket: str, conn: str, slow_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    files = {f"f{i:02d}.bin": random.Random(i).randbytes(512 * 1024) for i in range(40)}
    make_tree(tmp_path / "out", files)
    random_file(tmp_path / "out" / "large.bin", 3 * PART)  # uploaded last, as a multipart upload
    slow_proxy.configure(upload_bytes_per_second=1_000_000)  # half a second per file
    cancellation = Cancellation()
    running = Publishing(
        source=tmp_path / "out",
        bucket=bucket,
        key="plain/",
        manifest=True,
        endpoint=slow_proxy.endpoint,
        aws_conn_id=conn,
        transfer=TRANSFER,
        cancellation=cancellation,
    )
    wait_until(slow_proxy, running, "a few files", lambda s: s.operations.get("PutObject", 0) >= 4)
    cancellation.cancel("the task was killed")
    running.join()

    assert isinstance(running.error, PublishError)
    message = str(running.error)
    assert "the plain publish under" in message
    assert "stopped after" in message
    assert "publishing was cancelled (the task was killed)" in message
    stored = objects_below(s3_admin, bucket)
    assert f"plain/{MANIFEST_NAME}" not in stored  # a cut publish is never reported complete
    assert len(stored) < len(files)
    assert "plain/large.bin" not in stored
    assert incomplete_uploads(s3_admin, bucket) == []
    assert part_threads() == []


def test_cancel_aborts_the_multipart_upload_of_a_large_plain_file(
    tmp_path: Path, bucket: str, conn: str, slow_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    random_file(tmp_path / "out" / "large.bin", 8 * PART)
    cancellation = Cancellation()
    running = Publishing(
        source=tmp_path / "out",
        bucket=bucket,
        key="plain/",
        manifest=True,
        endpoint=slow_proxy.endpoint,
        aws_conn_id=conn,
        transfer=TRANSFER,
        cancellation=cancellation,
    )
    wait_until(slow_proxy, running, "a part on its way", lambda s: s.bytes_up > PART)
    cancellation.cancel("the task was killed")
    running.join()

    assert isinstance(running.error, PublishError)
    assert f"aborted s3://{bucket}/plain/large.bin (upload " in str(running.error)
    assert objects_below(s3_admin, bucket) == {}
    assert incomplete_uploads(s3_admin, bucket) == []
    assert part_threads() == []


def test_a_cancelled_publish_sends_nothing(
    tmp_path: Path, bucket: str, conn: str, slow_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    make_tree(tmp_path / "out", {"a.txt": b"a"})
    cancellation = Cancellation()
    cancellation.cancel("stopped before it began")
    expected = r"cancelled \(stopped before it began\): no multipart upload in flight to abort"
    with pytest.raises(PublishError, match=expected):
        publish(
            tmp_path / "out",
            bucket=bucket,
            key="k",
            endpoint=slow_proxy.endpoint,
            aws_conn_id=conn,
            cancellation=cancellation,
        )
    assert slow_proxy.stats().requests == 0
    assert objects_below(s3_admin, bucket) == {}


def test_cancel_after_a_publish_completed_changes_nothing(
    tmp_path: Path, bucket: str, conn: str, seaweed: SeaweedServer, s3_admin: S3Client
) -> None:
    random_file(tmp_path / "out" / "big.bin", 3 * PART)
    cancellation = Cancellation()
    result = publish(
        tmp_path / "out",
        bucket=bucket,
        key="done",
        compress=True,
        endpoint=seaweed.endpoint,
        aws_conn_id=conn,
        transfer=TRANSFER,
        cancellation=cancellation,
    )
    cancellation.cancel("too late")
    assert cancellation.aborted == []
    assert list(objects_below(s3_admin, bucket)) == [result.key]
    assert incomplete_uploads(s3_admin, bucket) == []


# ------------------------------------------------------------------------------------------ on_kill


def test_on_kill_aborts_the_operators_publish(
    tmp_path: Path, bucket: str, conn: str, slow_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    from airflow.sdk import DAG

    from airflow_s3_publisher import S3PublishOperator

    source = random_file(tmp_path / "out" / "big.bin", 40 * MiB)
    with DAG("on_kill_test", schedule=None):
        op = S3PublishOperator(
            task_id="publish",
            source=str(source.parent),
            bucket=bucket,
            key="killed",
            compress=True,
            endpoint=slow_proxy.endpoint,
            aws_conn_id=conn,
            transfer=TRANSFER,
        )
    op.on_kill()  # before execute: nothing to abort, and no effect on the run that follows
    outcome: dict[str, BaseException] = {}

    def execute() -> None:
        try:
            op.execute({})  # type: ignore[arg-type]
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=execute, name="test-execute")
    thread.start()
    assert slow_proxy.wait_for(lambda s: s.bytes_up > PART, WAIT), slow_proxy.stats()
    op.on_kill()  # what the task runner's SIGTERM handler and its execution_timeout handler call
    thread.join(WAIT)
    assert not thread.is_alive()

    error = outcome.get("error")
    assert isinstance(error, PublishError), error
    assert f"publishing was cancelled (Airflow stopped the task publish): aborted s3://{bucket}/killed.tar.gz" in str(
        error
    )
    assert objects_below(s3_admin, bucket) == {}
    assert incomplete_uploads(s3_admin, bucket) == []
    assert part_threads() == []
