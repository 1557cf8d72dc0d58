"""Nothing lost, nothing leaked: publish() against SeaweedFS behind a fault-injecting proxy (issue #4).

Every test talks to the store through :class:`tests.faultproxy.FaultProxy` (``publish(...,
endpoint=proxy.endpoint)``) and checks the outcome directly on SeaweedFS with the admin client, never
through the proxy. The proxy is seeded (``FAULTPROXY_SEED`` mixed with the test's name) so a failing
run can be repeated; with parallel uploads the order of requests, and so exactly which ones fail, can
still vary. botocore's backoff is not seeded; behind the proxy it is ten times shorter than botocore's own.

- transient faults (503 SlowDown, 500 InternalError, connections reset mid-body, slow answers) are
  retried: the publish succeeds, the bytes and ChecksumSHA256 are right, the retries are logged;
- a store that never answers makes publish fail in bounded time with a clear error;
- a store killed in the middle of a multipart archive: the publish fails fast, no object appears,
  and Airflow's retry once the store is back publishes the right bytes and aborts the upload
  whose abort could not reach the dead store; a store that is back within the retry window loses
  and leaks nothing;
- an interrupted plain publish converges to exactly the right objects when retried;
- a source file that changes while it is published fails the publish and leaves no archive;
- many publishes at once, and two versions of one key, each get their own correct result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff

import airflow_s3_publisher.publishing as publish_module
import tools.seaweed as seaweed_module
from airflow_s3_publisher import PublishedResult, fetch, publish
from airflow_s3_publisher.exceptions import PublishError, S3RequestError, SourceError
from airflow_s3_publisher.options import MiB, TransferOptions
from airflow_s3_publisher.progress import Progress
from tests.faultproxy import (
    FORWARD,
    HANG,
    INTERNAL_ERROR,
    RESET,
    SLOWDOWN,
    UPSTREAM_DOWN,
    FaultProxy,
    Request,
    running_proxy,
)
from tests.support import archive_members, make_tree, objects_below, read_tree, sha256_b64, use_connection
from tools.seaweed import ADMIN, TEST_IDENTITIES, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.timeout(180)

SEED = int(os.environ.get("FAULTPROXY_SEED", "4242"))
PART = 5 * MiB
#: Generous attempts: with 30% of requests failing, 10 attempts all fail with odds of 6e-6 per request.
PATIENT = TransferOptions(
    part_size=PART, multipart_threshold=PART, concurrency=4, max_attempts=10, connect_timeout=2, read_timeout=30
)
#: Gives up quickly: for the tests where the publish must fail.
IMPATIENT = TransferOptions(
    part_size=PART, multipart_threshold=PART, concurrency=2, max_attempts=2, connect_timeout=1, read_timeout=1
)
RETRY_LOGGER = "botocore.retries.standard"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def airflow_logging_configured() -> None:
    """Import what publish() imports first: importing the amazon provider's S3Hook makes Airflow
    replace the root logger's handlers, which would silently drop pytest's caplog handler in the
    first test that publishes."""
    import airflow.providers.amazon.aws.hooks.s3  # noqa: F401


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retry backoff, ten times shorter: the same retries, less waiting between them.

    botocore 1.37 (the lowest environment) waits up to 1, 2, 4, 8... s before the retries of any error,
    newer botocore 50 ms, 100 ms... for errors that are not throttling: a few unlucky draws then cost the
    lowest run tens of seconds. What is retried, how often and what is logged stays botocore's.
    """
    original = ExponentialBackoff.delay_amount

    def shorter(self: ExponentialBackoff, context: Any) -> float:
        return float(original(self, context)) / 10

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", shorter)


@pytest.fixture
def fault_proxy(seaweed: SeaweedServer, request: pytest.FixtureRequest, quick_backoff: None) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's SeaweedFS, without faults until configured.

    Its seed is SEED mixed with the test's name: each test repeats its own sequence of faults. The
    store behind it stays up, so botocore's backoff is shortened (``quick_backoff``).
    """
    with running_proxy(seaweed.endpoint, seed=SEED + zlib.crc32(request.node.name.encode())) as proxy:
        yield proxy


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    """An Airflow AWS connection with the admin credentials (the endpoint is passed to publish())."""
    return use_connection(monkeypatch, "s3_faulty", seaweed, ADMIN)


# ------------------------------------------------------------------------------------------ helpers


def write_random_tree(root: Path, sizes: dict[str, int], seed: int = SEED) -> dict[str, bytes]:
    """Write files of random bytes (relative path -> size) below ``root``; return path -> content."""
    rng = random.Random(f"{seed}:{root.name}")
    files = {rel: rng.randbytes(size) for rel, size in sizes.items()}
    make_tree(root, files)
    return files


def get_bytes(s3: S3Client, bucket: str, key: str, version_id: str = "") -> bytes:
    args: dict[str, Any] = {"VersionId": version_id} if version_id else {}
    return s3.get_object(Bucket=bucket, Key=key, **args)["Body"].read()


def is_absent(s3: S3Client, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        return err.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def incomplete_uploads(s3: S3Client, bucket: str) -> list[dict[str, Any]]:
    return [dict(upload) for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def check_plain(s3: S3Client, bucket: str, result: PublishedResult, files: dict[str, bytes]) -> None:
    """The prefix holds exactly ``files``; each single-PUT object carries S3's own SHA-256 of its bytes."""
    assert result.checksum_sha256 == ""
    assert objects_below(s3, bucket, result.key) == {result.key + rel: data for rel, data in files.items()}
    for rel, data in files.items():
        stored = s3.get_object(Bucket=bucket, Key=result.key + rel, ChecksumMode="ENABLED").get("ChecksumSHA256", "")
        if "-" not in stored:  # a multipart object's checksum is S3's checksum of part checksums
            assert stored == sha256_b64(data), rel


def check_archive(s3: S3Client, bucket: str, result: PublishedResult, files: dict[str, bytes]) -> bytes:
    """The archive holds ``files`` and ChecksumSHA256 is the SHA-256 of the stored bytes; returns them."""
    data = get_bytes(s3, bucket, result.key, result.version_id)
    assert result.checksum_sha256 == sha256_b64(data)
    assert archive_members(data) == files
    return data


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """botocore's own retry lines (DEBUG): 'Retry needed, retrying request after delay of: 0.42'."""
    return [r.getMessage() for r in caplog.records if r.name == RETRY_LOGGER and "Retry needed" in r.getMessage()]


def package_retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The package's retry lines (WARNING): 'S3 PutObject attempt 1 of 10 failed (HTTP 503 SlowDown); ...'."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("airflow_s3_publisher") and r.levelno >= logging.WARNING and "retrying" in r.getMessage()
    ]


def restart_on_same_ports(server: SeaweedServer) -> None:
    """Start a stopped (or killed) server again on its data directory AND its previous ports.

    SeaweedServer.start() always draws new ports; there is no public way to keep them, so the port
    picker is replaced for the duration of the restart.
    """
    ports = server.ports
    server.stop()  # reaps a killed process; the data directory stays
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            seaweed_module,
            "_reserve_ports",
            lambda count: ([ports[name] for name in seaweed_module._PORT_NAMES][:count], []),
        )
        server.start()
    assert server.ports == ports


@contextlib.contextmanager
def growing_after(path: Path, threshold: int, change: Callable[[Path], None]) -> Iterator[list[int]]:
    """Make publish() call ``change(path)`` once, when its progress first passes ``threshold`` bytes.

    publish() reports progress after every chunk it reads (archives) or uploads (plain parts): this
    changes the file *while* it is being published, at a point that repeats. Yields a list that gets
    the byte count at which the change happened.
    """
    fired: list[int] = []
    lock = threading.Lock()

    class ChangingProgress(Progress):
        def add(self, nbytes: int = 0, files: int = 0) -> None:
            super().add(nbytes, files)
            with lock:
                if not fired and self.bytes >= threshold:
                    change(path)
                    fired.append(self.bytes)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish_module, "Progress", ChangingProgress)
        yield fired


def append_bytes(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"written late\n")


def rewrite_in_place(path: Path) -> None:
    """Same size, other content (the mtime changes)."""
    with open(path, "r+b") as handle:
        first = handle.read(16)
        handle.seek(0)
        handle.write(bytes(b ^ 0xFF for b in first))


# ======================================================================================================
# a. transient faults are retried and the result is exact
# ======================================================================================================

SMALL_TREE = {f"d{i % 3}/file-{i:02d}.bin": 1000 + 7919 * i for i in range(24)}  # 1 KB .. 180 KB
MULTIPART_TREE = {"big.bin": 14 * MiB + 321, "small/a.txt": 10, "small/b.bin": 200_000}
MULTIPART_ARCHIVE_TREE = {"big.bin": 13 * MiB + 17, "more/part.bin": 3 * MiB, "more/tiny.txt": 5}
FAULTS = {"error_rate": 0.2, "reset_rate": 0.08, "reset_after": 64 * 1024, "delay_rate": 0.1, "delay": 0.2}
#: Whatever the random draw, every case sees each kind of fault: the script fails some of the first
#: requests for sure, never many in a row (botocore's backoff doubles with each failure of a request).
MANY_REQUESTS = {"script": (SLOWDOWN, FORWARD, RESET, FORWARD, INTERNAL_ERROR), **FAULTS}
#: A small archive is ONE PutObject: it fails three times in a row (one of each kind), then succeeds.
ONE_REQUEST = {"script": (SLOWDOWN, RESET, INTERNAL_ERROR)}


@pytest.mark.parametrize(
    ("compress", "sizes", "faults"),
    [
        pytest.param(False, SMALL_TREE, MANY_REQUESTS, id="plain-small"),
        pytest.param(False, MULTIPART_TREE, MANY_REQUESTS, id="plain-multipart"),
        pytest.param(True, SMALL_TREE, ONE_REQUEST, id="compressed-small"),
        pytest.param(True, MULTIPART_ARCHIVE_TREE, MANY_REQUESTS, id="compressed-multipart"),
    ],
)
def test_transient_faults_are_retried_and_the_result_is_exact(
    compress: bool,
    sizes: dict[str, int],
    faults: dict[str, Any],
    tmp_path: Path,
    bucket: str,
    conn: str,
    fault_proxy: FaultProxy,
    s3_admin: S3Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = write_random_tree(tmp_path / "src", sizes)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=RETRY_LOGGER)
    fault_proxy.configure(**faults)

    result = publish(
        tmp_path / "src",
        bucket=bucket,
        key="faulty/run",
        compress=compress,
        endpoint=fault_proxy.endpoint,
        aws_conn_id=conn,
        transfer=PATIENT,
    )

    stats = fault_proxy.stats()
    if compress:
        check_archive(s3_admin, bucket, result, files)
        assert list(objects_below(s3_admin, bucket)) == [result.key]
    else:
        check_plain(s3_admin, bucket, result, files)
    assert incomplete_uploads(s3_admin, bucket) == []
    # Faults of every kind were injected, and each one cost exactly one retry, visible in the log.
    assert stats.faults.get(SLOWDOWN, 0) >= 1
    assert stats.faults.get(INTERNAL_ERROR, 0) >= 1
    assert stats.faults.get(RESET, 0) >= 1
    assert stats.requests == stats.forwarded + stats.injected
    # botocore's DEBUG line says only that it retries (the native engine retries in Python, without
    # one); the package's WARNING says what and why, whichever engine sent the request.
    native = [
        r
        for r in caplog.records
        if r.name.startswith("airflow_s3_publisher.s3.native") and "retrying" in r.getMessage()
    ]
    assert len(retry_lines(caplog)) + len(native) == stats.injected, fault_proxy.history()
    ours = package_retry_lines(caplog)
    assert len(ours) == stats.injected, ours
    assert any("(HTTP 503 SlowDown)" in line for line in ours), ours
    assert any("(HTTP 500 InternalError)" in line for line in ours), ours
    assert any("(ConnectionClosedError)" in line for line in ours), ours  # the resets


def test_each_retry_is_logged_with_operation_attempt_and_reason(
    tmp_path: Path, bucket: str, conn: str, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    write_random_tree(tmp_path / "src", {"a.bin": 1000})
    caplog.set_level(logging.INFO)
    fault_proxy.configure(script=(SLOWDOWN, INTERNAL_ERROR, RESET))
    publish(
        tmp_path / "src", bucket=bucket, key="logged", endpoint=fault_proxy.endpoint, aws_conn_id=conn, transfer=PATIENT
    )
    assert [kind for _, _, kind in fault_proxy.history()] == [SLOWDOWN, INTERNAL_ERROR, RESET, FORWARD]
    assert package_retry_lines(caplog) == [
        "S3 PutObject attempt 1 of 10 failed (HTTP 503 SlowDown); retrying with backoff",
        "S3 PutObject attempt 2 of 10 failed (HTTP 500 InternalError); retrying with backoff",
        "S3 PutObject attempt 3 of 10 failed (ConnectionClosedError); retrying with backoff",
    ]


# ======================================================================================================
# b. a store that never answers: bounded failure, clear error
# ======================================================================================================


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_a_store_that_never_answers_fails_in_bounded_time(
    compress: bool, tmp_path: Path, bucket: str, conn: str, fault_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    write_random_tree(tmp_path / "src", {"a.bin": 3000, "b/c.bin": 5000})
    fault_proxy.configure(hang=True)
    began = time.monotonic()
    with pytest.raises(PublishError, match="ReadTimeoutError") as err:
        publish(
            tmp_path / "src",
            bucket=bucket,
            key="silent",
            compress=compress,
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=IMPATIENT,
        )
    elapsed = time.monotonic() - began
    # 2 attempts of (1 s waiting for "100 Continue" + 1 s read timeout) plus a backoff below 1 s.
    assert elapsed < 15, elapsed
    cause = err.value.__cause__
    assert isinstance(cause, S3RequestError)
    assert (cause.operation, cause.code) == ("PutObject", "ReadTimeoutError")
    assert f"s3://{bucket}/silent" in str(err.value)
    assert fault_proxy.stats().faults[HANG] >= 2  # the retry happened too
    fault_proxy.calm()
    assert objects_below(s3_admin, bucket) == {}


def test_parts_that_never_get_an_answer_fail_in_bounded_time_and_are_aborted(
    tmp_path: Path, bucket: str, conn: str, fault_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    files = write_random_tree(tmp_path / "src", {"big.bin": 16 * MiB})
    fault_proxy.configure(rule=lambda r: HANG if r.operation == "UploadPart" else None)
    began = time.monotonic()
    with pytest.raises(PublishError, match="UploadPart.*ReadTimeoutError") as err:
        publish(
            tmp_path / "src",
            bucket=bucket,
            key="silent-parts",
            compress=True,
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=IMPATIENT,
        )
    elapsed = time.monotonic() - began
    assert elapsed < 30, elapsed
    assert f"nothing was published to s3://{bucket}/silent-parts.tar.gz" in str(err.value)
    ops = fault_proxy.stats().operations
    assert ops.get("AbortMultipartUpload") == 1
    assert is_absent(s3_admin, bucket, "silent-parts.tar.gz")
    assert incomplete_uploads(s3_admin, bucket) == []
    # The same publish goes through once the store answers again.
    fault_proxy.calm()
    result = publish(
        tmp_path / "src",
        bucket=bucket,
        key="silent-parts",
        compress=True,
        endpoint=fault_proxy.endpoint,
        aws_conn_id=conn,
        transfer=IMPATIENT,
    )
    check_archive(s3_admin, bucket, result, files)


# ======================================================================================================
# c. the store is killed in the middle of a multipart archive
# ======================================================================================================

KILL_AFTER = 12 * MiB


@dataclass
class KillOutcome:
    """What happened around a SIGKILL of the store during a 40 MiB multipart archive upload."""

    bucket: str
    key: str
    files: dict[str, bytes]
    error: BaseException | None = None
    seconds_after_kill: float = 0.0
    bytes_before_kill: int = 0
    ports_kept: bool = False
    key_absent_after_restart: bool = False
    uploads_after_restart: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    proxy_faults: dict[str, int] = field(default_factory=dict)
    retry: PublishedResult | None = None
    retry_bytes: bytes = b""
    uploads_after_retry: list[dict[str, Any]] = field(default_factory=list)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("airflow_s3_publisher"):
            self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def killed_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillOutcome]:
    """Run the kill scenario once (about 15 s); the tests below each check one part of the outcome."""
    server = SeaweedServer(tmp_path_factory.mktemp("killed-seaweed"), TEST_IDENTITIES)
    source = tmp_path_factory.mktemp("killed-src")
    outcome = KillOutcome(bucket="killed", key="big.tar.gz", files=write_random_tree(source, {"big.bin": 40 * MiB}))
    records = _Records()
    package_log = logging.getLogger("airflow_s3_publisher")
    package_log.addHandler(records)
    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as patch:
        stack.callback(package_log.removeHandler, records)
        stack.callback(server.stop)
        server.start()
        server.create_bucket(outcome.bucket)
        conn = use_connection(patch, "s3_killed", server, ADMIN)
        # Throttled so that the kill lands in the middle, whatever the machine's speed.
        proxy = stack.enter_context(running_proxy(server.endpoint, seed=SEED, upload_bytes_per_second=24 * MiB))
        options = TransferOptions(
            part_size=PART, multipart_threshold=PART, concurrency=2, max_attempts=3, connect_timeout=1, read_timeout=5
        )
        killed_at: list[float] = []

        def kill_when_parts_went_through() -> None:
            if proxy.wait_for(lambda s: s.bytes_up >= KILL_AFTER, timeout=60):
                outcome.bytes_before_kill = proxy.stats().bytes_up
                os.kill(server.pid, signal.SIGKILL)  # the server this fixture started
                killed_at.append(time.monotonic())

        killer = threading.Thread(target=kill_when_parts_went_through, name="killer")
        killer.start()
        try:
            publish(
                source,
                bucket=outcome.bucket,
                key=outcome.key,
                endpoint=proxy.endpoint,
                aws_conn_id=conn,
                compress=True,
                transfer=options,
            )
        except BaseException as err:  # recorded; the tests judge it
            outcome.error = err
        finally:
            killer.join(70)
        assert killed_at, "the server was never killed: the publish went too fast or never started"
        outcome.seconds_after_kill = time.monotonic() - killed_at[0]
        outcome.warnings = list(records.lines)
        outcome.proxy_faults = proxy.stats().faults

        restart_on_same_ports(server)
        outcome.ports_kept = True
        admin = server.client()
        outcome.key_absent_after_restart = is_absent(admin, outcome.bucket, outcome.key)
        outcome.uploads_after_restart = incomplete_uploads(admin, outcome.bucket)

        # Airflow retries the task once the store is back: the same publish, as try 2.
        proxy.calm()
        outcome.retry = publish(
            source,
            bucket=outcome.bucket,
            key=outcome.key,
            endpoint=proxy.endpoint,
            aws_conn_id=conn,
            compress=True,
            transfer=options,
            context={"run_id": "r", "ti": SimpleNamespace(dag_id="d", task_id="t", try_number=2)},
        )
        outcome.retry_bytes = get_bytes(admin, outcome.bucket, outcome.key)
        outcome.uploads_after_retry = incomplete_uploads(admin, outcome.bucket)
        yield outcome


def test_killed_store_fails_the_publish_fast_with_a_clear_error(killed_store: KillOutcome) -> None:
    assert killed_store.bytes_before_kill >= KILL_AFTER
    assert isinstance(killed_store.error, PublishError), repr(killed_store.error)
    message = str(killed_store.error)
    assert f"nothing was published to s3://{killed_store.bucket}/{killed_store.key}" in message
    assert "UploadPart" in message or "CompleteMultipartUpload" in message
    assert isinstance(killed_store.error.__cause__, S3RequestError)
    # 3 attempts with backoff, twice (a part, then the abort): well under half a minute.
    assert killed_store.seconds_after_kill < 30, killed_store.seconds_after_kill
    assert killed_store.proxy_faults.get(UPSTREAM_DOWN, 0) >= 1


def test_killed_store_leaves_no_object_behind(killed_store: KillOutcome) -> None:
    assert killed_store.ports_kept
    assert killed_store.key_absent_after_restart


def test_killed_store_abort_failure_is_reported(killed_store: KillOutcome) -> None:
    """While the store is down the abort cannot succeed: the upload survives the restart, and a warning says so."""
    assert [u["Key"] for u in killed_store.uploads_after_restart] == [killed_store.key]
    (upload,) = killed_store.uploads_after_restart
    # The warning names the key and (inside the failed request's URL) the UploadId to abort by hand.
    assert any(
        "Could not abort the multipart upload" in line and killed_store.key in line and upload["UploadId"] in line
        for line in killed_store.warnings
    ), killed_store.warnings


def test_killed_store_retry_after_restart_publishes_the_right_bytes(killed_store: KillOutcome) -> None:
    assert killed_store.retry is not None
    assert killed_store.retry.checksum_sha256 == sha256_b64(killed_store.retry_bytes)
    assert archive_members(killed_store.retry_bytes) == killed_store.files


def test_killed_store_no_incomplete_upload_is_left_once_the_retry_succeeded(killed_store: KillOutcome) -> None:
    assert killed_store.uploads_after_retry == []


def test_store_killed_and_back_within_the_retry_window_loses_and_leaks_nothing(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store crashes and comes back (same data, same ports) while the parts are being retried.

    Either the publish rides it out and the archive is exact, or it fails cleanly; in both cases no
    incomplete upload is left, because this time the store is up when the abort is sent.
    """
    server = SeaweedServer(tmp_path_factory.mktemp("restarted-seaweed"), TEST_IDENTITIES)
    source = tmp_path_factory.mktemp("restarted-src")
    files = write_random_tree(source, {"big.bin": 24 * MiB})
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        server.start()
        server.create_bucket("restarted")
        conn = use_connection(monkeypatch, "s3_restarted", server, ADMIN)
        proxy = stack.enter_context(running_proxy(server.endpoint, seed=SEED, upload_bytes_per_second=24 * MiB))
        options = TransferOptions(
            part_size=PART, multipart_threshold=PART, concurrency=2, max_attempts=8, connect_timeout=1, read_timeout=10
        )
        restarted: list[float] = []

        def crash_and_restart() -> None:
            if proxy.wait_for(lambda s: s.bytes_up >= 8 * MiB, timeout=60):
                os.kill(server.pid, signal.SIGKILL)  # the server this test started
                restart_on_same_ports(server)
                restarted.append(time.monotonic())

        crasher = threading.Thread(target=crash_and_restart, name="crasher")
        crasher.start()
        result: PublishedResult | None = None
        failure: PublishError | None = None
        try:
            result = publish(
                source,
                bucket="restarted",
                key="big",
                endpoint=proxy.endpoint,
                aws_conn_id=conn,
                compress=True,
                transfer=options,
            )
        except PublishError as err:
            failure = err
        finally:
            crasher.join(90)
        assert restarted, "the server was never killed and restarted"
        assert proxy.stats().faults.get(UPSTREAM_DOWN, 0) >= 1  # the crash was felt
        admin = server.client()
        if result is None:
            assert "nothing was published to s3://restarted/big.tar.gz" in str(failure)
            assert is_absent(admin, "restarted", "big.tar.gz")
        else:
            check_archive(admin, "restarted", result, files)
        logging.getLogger(__name__).info("publish across the crash: %s", "failed" if failure else "succeeded")
        assert incomplete_uploads(admin, "restarted") == []


# ======================================================================================================
# d. a plain publish interrupted half-way converges when retried
# ======================================================================================================

PLAIN_TREE = {f"part-{i // 10}/obj-{i:02d}.bin": 5000 + 3001 * i for i in range(30)}  # 5 KB .. 92 KB


@pytest.mark.parametrize("failure", [SLOWDOWN, RESET])
def test_interrupted_plain_publish_converges_on_retry(
    failure: str,
    tmp_path: Path,
    bucket: str,
    conn: str,
    fault_proxy: FaultProxy,
    s3_admin: S3Client,
) -> None:
    files = write_random_tree(tmp_path / "src", PLAIN_TREE)
    passed: list[int] = []

    def refuse_after_twelve(request: Request) -> str:
        if request.operation == "PutObject" and len(passed) < 12:
            passed.append(request.number)
            return FORWARD
        return failure

    fault_proxy.configure(rule=refuse_after_twelve, reset_after=1000)
    with pytest.raises(PublishError, match=r"stopped after \d+ of 30 objects") as err:
        publish(
            tmp_path / "src",
            bucket=bucket,
            key="plain/run",
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=IMPATIENT,
        )
    assert "a retry of the task uploads every object again" in str(err.value)
    half = objects_below(s3_admin, bucket)
    # What got through is whole: no truncated object from the cut connections.
    assert 0 < len(half) <= 12
    for key, data in half.items():
        assert data == files[key.removeprefix("plain/run/")], key

    fault_proxy.calm()
    result = publish(
        tmp_path / "src",
        bucket=bucket,
        key="plain/run",
        endpoint=fault_proxy.endpoint,
        aws_conn_id=conn,
        transfer=IMPATIENT,
    )
    check_plain(s3_admin, bucket, result, files)
    assert len(objects_below(s3_admin, bucket)) == len(files)


# ======================================================================================================
# e. a source file that changes while it is published
# ======================================================================================================

CHANGING_TREE = {"big.bin": 14 * MiB, "z-small.txt": 100}


@pytest.mark.parametrize("change", [append_bytes, rewrite_in_place], ids=["grows", "rewritten"])
def test_archive_of_a_file_changing_mid_read_fails_and_leaves_nothing(
    change: Callable[[Path], None],
    tmp_path: Path,
    bucket: str,
    conn: str,
    fault_proxy: FaultProxy,
    s3_admin: S3Client,
) -> None:
    write_random_tree(tmp_path / "src", CHANGING_TREE)
    with (
        growing_after(tmp_path / "src" / "big.bin", 11 * MiB, change) as fired,
        pytest.raises(SourceError, match="big.bin changed while being published"),
    ):
        publish(
            tmp_path / "src",
            bucket=bucket,
            key="changing",
            compress=True,
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=PATIENT,
        )
    assert fired  # the file changed in the middle of its read
    ops = fault_proxy.stats().operations
    assert ops.get("UploadPart", 0) >= 2  # parts of the truncated archive had been sent...
    assert ops.get("AbortMultipartUpload") == 1  # ...and were thrown away
    assert ops.get("CompleteMultipartUpload", 0) == 0
    assert is_absent(s3_admin, bucket, "changing.tar.gz")
    assert incomplete_uploads(s3_admin, bucket) == []


def test_archive_of_a_file_appended_to_all_along_fails_and_leaves_nothing(
    tmp_path: Path, bucket: str, conn: str, fault_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    """A real writer in another thread, appending while the file is listed, opened and read."""
    write_random_tree(tmp_path / "src", CHANGING_TREE)
    stop = threading.Event()

    def writer() -> None:
        with open(tmp_path / "src" / "big.bin", "ab") as handle:
            for _ in range(4000):  # bounded: 4000 x 4 KiB = 16 MiB at most
                handle.write(os.urandom(4096))
                handle.flush()
                if stop.wait(0.002):
                    return

    thread = threading.Thread(target=writer, name="appender")
    thread.start()
    try:
        with pytest.raises(SourceError, match="big.bin changed while being published"):
            publish(
                tmp_path / "src",
                bucket=bucket,
                key="appended",
                compress=True,
                endpoint=fault_proxy.endpoint,
                aws_conn_id=conn,
                transfer=PATIENT,
            )
    finally:
        stop.set()
        thread.join(10)
    assert is_absent(s3_admin, bucket, "appended.tar.gz")
    assert incomplete_uploads(s3_admin, bucket) == []


def remove_file(path: Path) -> None:
    path.unlink()


ONE_AT_A_TIME = TransferOptions(part_size=PART, multipart_threshold=PART, concurrency=1, max_attempts=2)


@pytest.mark.parametrize(
    ("sizes", "victim"),
    [
        pytest.param({"a.bin": 3 * MiB, "b.bin": 3 * MiB}, "b.bin", id="small-file"),
        pytest.param({"big.bin": 12 * MiB}, "big.bin", id="multipart-file"),
    ],
)
def test_plain_publish_of_a_growing_file_is_a_source_error(
    sizes: dict[str, int],
    victim: str,
    tmp_path: Path,
    bucket: str,
    conn: str,
    fault_proxy: FaultProxy,
    s3_admin: S3Client,
) -> None:
    """b.bin grows once a.bin is stored (small files); big.bin grows once its first part is stored."""
    write_random_tree(tmp_path / "src", sizes)
    with (
        growing_after(tmp_path / "src" / victim, 1, append_bytes) as fired,
        pytest.raises(SourceError, match=f"{victim} changed while being published"),
    ):
        publish(
            tmp_path / "src",
            bucket=bucket,
            key="plain-changing",
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=ONE_AT_A_TIME,
        )
    assert fired
    assert is_absent(s3_admin, bucket, f"plain-changing/{victim}")
    assert incomplete_uploads(s3_admin, bucket) == []


def test_plain_publish_of_a_file_removed_midway_is_a_source_error(
    tmp_path: Path, bucket: str, conn: str, fault_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    write_random_tree(tmp_path / "src", {"a.bin": 3 * MiB, "b.bin": 3 * MiB})
    with (
        growing_after(tmp_path / "src" / "b.bin", 1, remove_file) as fired,
        pytest.raises(SourceError, match="b.bin changed while being published"),
    ):
        publish(
            tmp_path / "src",
            bucket=bucket,
            key="plain-removed",
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=ONE_AT_A_TIME,
        )
    assert fired


# ======================================================================================================
# f. many publishes at once; two versions of one key
# ======================================================================================================


def test_sixteen_concurrent_publishes_are_each_correct(
    tmp_path: Path, bucket: str, conn: str, fault_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    jobs: list[tuple[int, bool, dict[str, bytes]]] = []
    for i in range(16):
        sizes = {f"n{i}/a.txt": 100 + i, f"n{i}/deep/b.bin": 20_000 + 1000 * i}
        if i % 4 == 0:
            sizes["big.bin"] = 6 * MiB + i  # multipart, plain or archived
        jobs.append((i, i % 2 == 0, write_random_tree(tmp_path / f"src{i}", sizes)))
    fault_proxy.configure(error_rate=0.1, reset_rate=0.05, reset_after=32 * 1024)
    options = TransferOptions(
        part_size=PART, multipart_threshold=PART, concurrency=2, max_attempts=10, connect_timeout=2, read_timeout=30
    )

    def run(job: tuple[int, bool, dict[str, bytes]]) -> PublishedResult:
        i, compress, _ = job
        return publish(
            tmp_path / f"src{i}",
            bucket=bucket,
            key=f"many/{i:02d}",
            compress=compress,
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=options,
        )

    with ThreadPoolExecutor(16, thread_name_prefix="publisher") as pool:
        results = list(pool.map(run, jobs, timeout=150))

    for (i, compress, files), result in zip(jobs, results, strict=True):
        if compress:
            assert result.key == f"many/{i:02d}.tar.gz"
            check_archive(s3_admin, bucket, result, files)
        else:
            assert result.key == f"many/{i:02d}/"
            check_plain(s3_admin, bucket, result, files)
    total_objects = sum(1 if compress else len(files) for _, compress, files in jobs)
    assert len(objects_below(s3_admin, bucket)) == total_objects
    assert incomplete_uploads(s3_admin, bucket) == []
    assert fault_proxy.stats().injected > 0


def test_two_publishes_to_one_key_of_a_versioned_bucket_each_get_their_version(
    tmp_path: Path, versioned_bucket: str, conn: str, fault_proxy: FaultProxy, s3_admin: S3Client
) -> None:
    small = write_random_tree(tmp_path / "small", {"out.bin": 50_000})
    large = write_random_tree(tmp_path / "large", {"out.bin": 11 * MiB})
    fault_proxy.configure(error_rate=0.2, reset_rate=0.1, reset_after=32 * 1024)
    start = threading.Barrier(2, timeout=30)

    def run(name: str) -> PublishedResult:
        start.wait()
        return publish(
            tmp_path / name,
            bucket=versioned_bucket,
            key="same",
            compress=True,
            endpoint=fault_proxy.endpoint,
            aws_conn_id=conn,
            transfer=PATIENT,
        )

    with ThreadPoolExecutor(2, thread_name_prefix="versions") as pool:
        first, second = pool.map(run, ["small", "large"], timeout=120)

    assert first.key == second.key == "same.tar.gz"
    assert first.version_id
    assert second.version_id
    assert first.version_id != second.version_id
    assert first.checksum_sha256 != second.checksum_sha256
    for number, (result, files) in enumerate(((first, small), (second, large))):
        check_archive(s3_admin, versioned_bucket, result, files)
        # fetch() goes through the faulty proxy too (the result's endpoint), pinned to the version.
        fetched = fetch(result, tmp_path / f"fetched-{number}", aws_conn_id=conn, transfer=PATIENT)
        assert read_tree(fetched) == files
    assert incomplete_uploads(s3_admin, versioned_bucket) == []
