"""Publishing where Airflow users run it: the CeleryExecutor, two workers, killed tasks and killed workers.

One deployment for the module (started by the ``cluster`` fixture, stopped by process session):
Postgres as the metadata database, Redis as the broker, the api-server, scheduler and dag-processor, and
two Celery workers (see tests/celery_harness.py) that each have their own host name, scratch folder,
``TMPDIR`` and queues. The DAGs are tests/dags/celery_scenarios.py. Every outcome is read from what is
really in SeaweedFS (the admin client, never the proxy) and from Airflow's own records (REST API: task
instances, their tries and hostnames, XComs, task logs).

Uploads that must still be in flight when something is killed go through a FaultProxy in the test
process (connection ``s3_proxy``), which throttles request bodies and, for the plain retry, fails the
first try's uploads on cue.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_s3_publisher.manifest import MANIFEST_NAME, parse_manifest
from tests.celery_harness import CeleryDeployment, Worker
from tests.faultproxy import INTERNAL_ERROR, FaultProxy, Request, running_proxy
from tests.support import archive_members, objects_below, read_tree, sha256_b64, use_connection
from tools.postgres import PostgresServer
from tools.redis_server import RedisServer
from tools.seaweed import ADMIN, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _on_the_lowest_environment() -> bool:
    """Whether this is the environment of requirements/lock-lowest.txt (its Airflow is lowest.in's pin)."""
    pins = (Path(__file__).parent.parent / "requirements" / "lowest.in").read_text()
    pinned = re.search(r"^apache-airflow==(\S+)", pins, re.MULTILINE)
    return pinned is not None and version("apache-airflow") == pinned.group(1)


pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        _on_the_lowest_environment() and os.environ.get("S3PUB_CELERY_ON_LOWEST") != "1",
        reason="the CeleryExecutor deployment runs on the newest locked environment only, to keep CI short "
        "(about 3 minutes a run); S3PUB_CELERY_ON_LOWEST=1 runs it on the lowest one too",
    ),
]

DAGS = Path(__file__).parent / "dags" / "celery_scenarios.py"
DAG_IDS = [
    "celery_handoff",
    "celery_mapped",
    "celery_worker_killed",
    "celery_timeout",
    "celery_marked_failed",
    "celery_plain_retry",
]
A, B = "worker-a", "worker-b"
STARTUP_TIMEOUT = 240.0
RUN_TIMEOUT = 240.0
MiB = 1024 * 1024
#: Per connection: with two connections a task's upload moves at 2 MB/s, a 48 MiB archive for ~25 s.
SLOW = 1_000_000
MANIFEST = MANIFEST_NAME


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "--uts", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# ------------------------------------------------------------------------------------------ measuring


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.append(int(entry))
    return found


class MemorySampler:
    """Samples, once a second, the summed RSS of every process of the cluster: Airflow's components, the
    workers with their pool processes, task supervisors and tasks, Postgres (postmaster and backends) and
    Redis. SeaweedFS (the store, shared with the other tests) is sampled apart."""

    def __init__(self, deployment: CeleryDeployment, postgres: PostgresServer, redis: RedisServer, seaweed: int):
        self._deployment, self._postgres, self._redis, self._seaweed = deployment, postgres, redis, seaweed
        self.peak_kib = 0
        self.peak_processes = 0
        self.peak_seaweed_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> None:
        pids = {pid for members in self._deployment.processes().values() for pid in members}
        if self._postgres.is_running:
            pids |= {self._postgres.pid, *_children(self._postgres.pid)}
        if self._redis.is_running:
            pids.add(self._redis.pid)
        total = sum(_rss_kib(pid) for pid in pids)
        if total > self.peak_kib:
            self.peak_kib, self.peak_processes = total, len(pids)
        self.peak_seaweed_kib = max(self.peak_seaweed_kib, _rss_kib(self._seaweed))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sample()
            except Exception as err:  # never let sampling break the tests
                print(f"memory sampling failed: {err!r}")


# ------------------------------------------------------------------------------------------ the proxy's script


@dataclass
class ProxyScript:
    """What the proxy does per bucket: records each request; for a bucket in ``cut_after``, lets that
    many PutObjects through and answers every later one with a 500."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)

    def __call__(self, request: Request) -> str | None:  # called under the proxy's lock
        bucket = request.target.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        limit = self.cut_after.get(bucket) if request.operation == "PutObject" else None
        if limit is not None and self.count(bucket, "PutObject") >= limit:
            self.seen.append((bucket, "PutObject refused"))
            return INTERNAL_ERROR
        self.seen.append((bucket, request.operation))
        return None

    def count(self, bucket: str, operation: str) -> int:
        return sum(1 for seen in list(self.seen) if seen == (bucket, operation))


# ------------------------------------------------------------------------------------------ fixtures


@dataclass
class Cluster:
    deployment: CeleryDeployment
    proxy: FaultProxy
    script: ProxyScript

    @property
    def a(self) -> Worker:
        return self.deployment.workers[A]

    @property
    def b(self) -> Worker:
        return self.deployment.workers[B]

    def slow(self, bytes_per_second: float = SLOW) -> None:
        self.proxy.configure(upload_bytes_per_second=bytes_per_second, rule=self.script)

    def calm(self) -> None:
        self.script.cut_after.clear()
        self.proxy.configure(upload_bytes_per_second=None, rule=self.script)

    def run(self, dag_id: str, conf: dict[str, Any]) -> str:
        self.deployment.unpause(dag_id)
        return self.deployment.trigger(dag_id, conf)

    def finish(self, dag_id: str, run_id: str, expected: str = "success") -> None:
        state = self.deployment.wait_run_finished(dag_id, run_id, RUN_TIMEOUT)
        assert state == expected, self.deployment.task_states(dag_id, run_id)

    def running_on(self, dag_id: str, run_id: str, task_id: str, worker: str) -> bool:
        ti = self.deployment.task_instance(dag_id, run_id, task_id)
        return bool(ti["state"] == "running" and ti["hostname"] == worker)


@pytest.fixture(scope="module")
def cluster(seaweed: SeaweedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root: Postgres runs as the postgres user, each worker gets its host name from unshare")
    if not _unshare_works():
        pytest.fail("unshare --uts does not work here; the workers cannot get host names of their own")
    root = tmp_path_factory.mktemp("celery")
    dags_folder = root / "dags"
    dags_folder.mkdir()
    shutil.copy(DAGS, dags_folder)
    script = ProxyScript()
    began = time.monotonic()
    with (
        running_proxy(seaweed.endpoint, rule=script) as proxy,
        pytest.MonkeyPatch.context() as patch,
        PostgresServer() as postgres,
        RedisServer(root / "redis") as redis,
    ):
        use_connection(patch, "aws_default", seaweed, ADMIN)
        use_connection(patch, "s3_proxy", seaweed, ADMIN, endpoint_url=proxy.endpoint)
        connections = {name: os.environ[name] for name in ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_S3_PROXY")}
        deployment = CeleryDeployment(
            root,
            dags_folder,
            connections,
            database_url=postgres.url("postgresql+psycopg2"),
            broker_url=redis.url(),
        )
        sampler = MemorySampler(deployment, postgres, redis, seaweed.pid)
        sampler.start()
        try:
            deployment.cli("db", "migrate", timeout=300)
            deployment.start()
            # The workers start while the api-server and the dag-processor do; one after the other: two
            # workers starting at once race to create Celery's result table.
            deployment.start_worker(A, ["a", "shared", "handover"])
            deployment.start_worker(B, ["b", "shared"])
            deployment.wait_ready(DAG_IDS, STARTUP_TIMEOUT)
            deployment.timings["cluster start-up"] = time.monotonic() - began
            yield Cluster(deployment, proxy, script)
        finally:
            sampler.sample()
            sampler.stop()
            deployment.stop()
            print(
                "celery cluster timings (s):",
                {k: round(v, 1) for k, v in deployment.timings.items()},
                f"postgres start {postgres.startup_seconds:.1f} s, redis start {redis.startup_seconds:.1f} s;",
                f"peak RSS of the cluster {sampler.peak_kib / 1024:.0f} MiB over {sampler.peak_processes} processes",
                f"(SeaweedFS {sampler.peak_seaweed_kib / 1024:.0f} MiB)",
            )


@pytest.fixture(scope="module")
def early_runs(cluster: Cluster, seaweed: SeaweedServer) -> Iterator[dict[str, tuple[str, str]]]:
    """The runs that need no proxy (handoff, mapped), started at once: they overlap the other scenarios,
    which mostly wait on throttled uploads. dag_id -> (bucket, run_id)."""
    runs = {}
    for dag_id in ("celery_handoff", "celery_mapped"):
        bucket = f"t-{uuid.uuid4().hex[:8]}"
        seaweed.create_bucket(bucket)
        runs[dag_id] = (bucket, cluster.run(dag_id, {"bucket": bucket}))
    yield runs
    for bucket, _ in runs.values():
        with contextlib.suppress(Exception):
            seaweed.client().delete_bucket(Bucket=bucket)


@pytest.fixture(autouse=True)
def _healthy(cluster: Cluster, early_runs: dict[str, tuple[str, str]]) -> Iterator[None]:
    """Each scenario starts with both workers up, on their own queues, and a proxy that lets all through."""
    cluster.deployment.ensure_workers()
    cluster.calm()
    with cluster.deployment.diagnosed():
        yield


# ------------------------------------------------------------------------------------------ helpers


def incomplete_uploads(s3: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def safe(run_id: str) -> str:
    return run_id.replace(":", "_").replace("+", "_")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(seed: int, size: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def plain_files(count: int) -> dict[str, bytes]:
    return {f"files/f{i:03d}.txt": (f"file {i:03d}\n" * (6000 + i)).encode() for i in range(count)}


def metadata(s3: S3Client, bucket: str, key: str) -> dict[str, str]:
    return dict(s3.head_object(Bucket=bucket, Key=key)["Metadata"])


# ------------------------------------------------------------------------------------------ scenarios


def test_execution_timeout_aborts_the_multipart_upload(cluster: Cluster, bucket: str, s3_admin: S3Client) -> None:
    dag_id = "celery_timeout"
    deployment = cluster.deployment
    cluster.slow()
    run_id = cluster.run(dag_id, {"bucket": bucket})
    cluster.finish(dag_id, run_id, expected="failed")

    ti = deployment.task_instance(dag_id, run_id, "publish")
    assert (ti["state"], ti["hostname"]) == ("failed", A)
    # It was cut mid-upload: parts went out, none was completed.
    assert cluster.script.count(bucket, "UploadPart") >= 1
    assert cluster.script.count(bucket, "CompleteMultipartUpload") == 0
    assert objects_below(s3_admin, bucket) == {}
    assert incomplete_uploads(s3_admin, bucket) == []
    log = deployment.task_log(dag_id, run_id, "publish", 1)
    assert "AirflowTaskTimeout" in log or "Timeout" in log, log[-3000:]
    assert re.search(rf"Aborted the multipart upload \S+ of s3://{bucket}/timeout/\S+\.tar\.gz", log), log[-3000:]
    assert "Publishing cancelled (Airflow stopped the task publish)" in log  # on_kill ran too: nothing was left


def test_marking_running_tasks_failed_aborts_their_uploads(cluster: Cluster, bucket: str, s3_admin: S3Client) -> None:
    """The REST API marks both publishing tasks failed mid-upload: the supervisor's SIGTERM reaches each
    task's on_kill (S3PublishOperator on worker A, @task.s3_publish on worker B), which aborts the uploads."""
    dag_id = "celery_marked_failed"
    deployment = cluster.deployment
    cluster.slow()
    run_id = cluster.run(dag_id, {"bucket": bucket, "files": 8})
    tasks = {"publish_operator": A, "publish_decorated": B}

    def both_in_flight() -> bool:
        uploads = incomplete_uploads(s3_admin, bucket)
        return (
            all(cluster.running_on(dag_id, run_id, task, host) for task, host in tasks.items())
            and any(k.endswith("/archive.tar.gz") for k in uploads)
            and any(k.endswith("/plain/big.bin") for k in uploads)
        )

    deployment.wait_for("both multipart uploads in flight", both_in_flight, RUN_TIMEOUT)
    in_flight = incomplete_uploads(s3_admin, bucket)
    for task in tasks:
        deployment.mark_failed(dag_id, run_id, task)

    deployment.wait_for(
        "the uploads aborted by on_kill (they stay forever without it)",
        lambda: incomplete_uploads(s3_admin, bucket) == [],
        60,
    )
    for task, host in tasks.items():
        ti = deployment.task_instance(dag_id, run_id, task)
        assert (ti["state"], ti["hostname"]) == ("failed", host)
        key = next(k for k in in_flight if k.endswith("archive.tar.gz" if task == "publish_operator" else "big.bin"))
        # on_kill's own line (the task may be SIGKILLed before it logs its failure).
        said = f"Publishing cancelled (Airflow stopped the task {task}): aborted s3://{bucket}/{key} (upload "
        deployment.wait_for(
            f"{task}'s log of what was aborted",
            lambda task=task, said=said: said in deployment.task_log(dag_id, run_id, task, 1),
            60,
        )
    stored = objects_below(s3_admin, bucket)
    assert not [k for k in stored if k.endswith((".tar.gz", MANIFEST, "big.bin"))], sorted(stored)
    assert incomplete_uploads(s3_admin, bucket) == []


def test_plain_publish_retried_on_the_other_worker_converges(cluster: Cluster, bucket: str, s3_admin: S3Client) -> None:
    dag_id = "celery_plain_retry"
    deployment = cluster.deployment
    count, stored_by_try_1 = 24, 4
    cluster.slow(200_000)
    cluster.script.cut_after[bucket] = stored_by_try_1  # then the store fails try 1's uploads
    run_id = cluster.run(dag_id, {"bucket": bucket, "files": count})
    try:
        # Try 1 was taken by worker A; its retry (5 s later) must wait in the queue until B takes it.
        deployment.wait_for(
            "try 1 on worker A", lambda: deployment.task_instance(dag_id, run_id, "plain")["hostname"] == A, RUN_TIMEOUT
        )
        deployment.move_queue("handover", A, None)

        def retry_queued() -> bool:
            ti = deployment.task_instance(dag_id, run_id, "plain")
            return bool(ti["try_number"] == 2 and ti["state"] == "queued")

        deployment.wait_for("the retry queued", retry_queued, RUN_TIMEOUT)
        cut = objects_below(s3_admin, bucket)
        prefix = next(iter(cut)).rsplit("files/", 1)[0]
        assert len(cut) == stored_by_try_1
        assert f"{prefix}{MANIFEST}" not in cut  # a cut plain publish is never reported complete
        log = deployment.task_log(dag_id, run_id, "plain", 1)
        assert "stopped after" in log
        assert f"from {cluster.a.tmp}/s3publish-plain-" in log  # produced in worker A's TMPDIR

        cluster.calm()
        deployment.move_queue("handover", None, B)
        cluster.finish(dag_id, run_id)
    finally:
        deployment.move_queue("handover", B, A)

    tries = deployment.tries(dag_id, run_id, "plain")
    assert [(t["try_number"], t["hostname"], t["state"]) for t in tries] == [(1, A, "failed"), (2, B, "success")]
    expected = {f"{prefix}{rel}": data for rel, data in plain_files(count).items()}
    stored = objects_below(s3_admin, bucket)
    manifest = parse_manifest(stored.pop(f"{prefix}{MANIFEST}"), "the manifest")
    assert stored == expected  # exactly the right objects, nothing stale, nothing missing
    for key in stored:
        assert metadata(s3_admin, bucket, key)["airflow-try-number"] == "2"  # every one rewritten by try 2
    assert {f"{prefix}{e.path}": e.sha256 for e in manifest} == {k: sha256_b64(v) for k, v in expected.items()}
    result = deployment.xcom(dag_id, run_id, "plain")
    assert result["Params"]["Key"] == prefix
    assert incomplete_uploads(s3_admin, bucket) == []
    assert f"from {cluster.b.tmp}/s3publish-plain-" in deployment.task_log(dag_id, run_id, "plain", 2)


def test_publish_on_worker_a_fetch_on_worker_b(
    cluster: Cluster, early_runs: dict[str, tuple[str, str]], s3_admin: S3Client
) -> None:
    dag_id = "celery_handoff"
    deployment = cluster.deployment
    bucket, run_id = early_runs[dag_id]
    cluster.finish(dag_id, run_id)

    hosts = {t: deployment.task_instance(dag_id, run_id, t)["hostname"] for t in ("produce", "publish", "fetch")}
    assert hosts == {"produce": A, "publish": A, "fetch": B}
    result = deployment.xcom(dag_id, run_id, "publish")
    key = result["Params"]["Key"]
    assert re.fullmatch(rf"handoff/{dag_id}__[^/]+/{A}\.tar\.gz", key), key  # {{nodeID}} named worker A
    stored = objects_below(s3_admin, bucket)
    assert list(stored) == [key]
    assert result["Params"]["ChecksumSHA256"] == sha256_b64(stored[key])

    produced = cluster.a.scratch / "produced" / safe(run_id)
    fetched = cluster.b.scratch / "fetched" / dag_id / safe(run_id)
    assert Path(deployment.xcom(dag_id, run_id, "fetch")) == fetched
    files = read_tree(produced)
    assert set(files) == {"report.csv", "data/values.bin"}
    assert files["report.csv"].decode().startswith(f"host,run\n{A},")  # written on worker A
    assert archive_members(stored[key]) == files
    assert read_tree(fetched) == files
    # Worker B only ever had the files through S3: nothing of A's folders is in B's, and the other way round.
    assert not (cluster.b.scratch / "produced").exists()
    assert [p for p in cluster.b.folder.rglob("report.csv")] == [fetched / "report.csv"]
    assert not (cluster.a.scratch / "fetched").exists()


def test_mapped_task_spreads_over_both_workers(
    cluster: Cluster, early_runs: dict[str, tuple[str, str]], s3_admin: S3Client
) -> None:
    dag_id = "celery_mapped"
    deployment = cluster.deployment
    bucket, run_id = early_runs[dag_id]
    cluster.finish(dag_id, run_id)

    instances = deployment.mapped_task_instances(dag_id, run_id, "part")
    assert sorted(ti["map_index"] for ti in instances) == list(range(32))
    host_of = {ti["map_index"]: ti["hostname"] for ti in instances}
    assert set(host_of.values()) == {A, B}, host_of
    stored = objects_below(s3_admin, bucket)
    assert len(stored) == 32
    for index, host in host_of.items():
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/part/xcomEntries/return_value"
        result = deployment.api("GET", f"{path}?map_index={index}".replace("+", "%2B"))["value"]
        key = result["Params"]["Key"]
        assert key.endswith(f"/{index}-{host}.tar.gz"), (key, host)  # {nodeID} is the TI's hostname
        assert result["Params"]["ChecksumSHA256"] == sha256_b64(stored[key])
        assert archive_members(stored[key]) == {f"part-{index}.txt": f"part {index}\n".encode() * (index + 1)}


def test_worker_killed_mid_publish_is_retried_on_the_other_worker(
    cluster: Cluster, bucket: str, s3_admin: S3Client
) -> None:
    """SIGKILL of worker A (every process of it) while its multipart archive upload is in flight."""
    dag_id = "celery_worker_killed"
    deployment = cluster.deployment
    size, seed = 48 * MiB, 7
    cluster.slow()
    run_id = cluster.run(dag_id, {"bucket": bucket, "size": size, "seed": seed})
    try:
        deployment.wait_for(
            "worker A's upload in flight",
            lambda: (
                cluster.running_on(dag_id, run_id, "big_archive", A)
                and cluster.script.count(bucket, "UploadPart") >= 1
                and incomplete_uploads(s3_admin, bucket) != []
            ),
            RUN_TIMEOUT,
        )
        left_behind = incomplete_uploads(s3_admin, bucket)
        deployment.kill_worker(A)
        cluster.calm()
        assert incomplete_uploads(s3_admin, bucket) == left_behind  # nobody aborted it: A died at once
        deployment.move_queue("handover", None, B)
        cluster.finish(dag_id, run_id)
    finally:
        deployment.move_queue("handover", B, None)

    tries = deployment.tries(dag_id, run_id, "big_archive")
    assert [(t["try_number"], t["hostname"]) for t in tries] == [(1, A), (2, B)]
    assert tries[-1]["state"] == "success"
    result = deployment.xcom(dag_id, run_id, "big_archive")
    key = result["Params"]["Key"]
    assert [key] == left_behind  # the retry published under the same key ...
    stored = objects_below(s3_admin, bucket)
    assert list(stored) == [key]
    assert incomplete_uploads(s3_admin, bucket) == []  # ... and aborted what try 1 left there
    assert "left by an earlier try" in deployment.task_log(dag_id, run_id, "big_archive", 2)
    expected = random_bytes(seed, size)
    assert archive_members(stored[key]) == {"big.bin": expected}
    fetched = Path(deployment.xcom(dag_id, run_id, "fetch"))
    assert fetched.is_relative_to(cluster.b.scratch)
    assert sha256_hex((fetched / "big.bin").read_bytes()) == sha256_hex(expected)
    assert deployment.task_instance(dag_id, run_id, "fetch")["hostname"] == B
