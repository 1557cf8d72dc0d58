"""Test DAGs for tests/test_celery.py: publishing on Celery workers that behave like separate machines.

Each worker has its own ``S3PUB_SCRATCH`` folder (and ``TMPDIR``): tasks write their output there and
fetch into it, through ``{{ scratch() }}`` in templates, which is rendered on the worker that runs the
task. Queues: ``a`` (worker A only), ``b`` (worker B only), ``shared`` (both), ``handover`` (worker A
at first; the test moves it to worker B to send a retry there). Every run names its bucket in
``params.bucket``. The connection ``s3_proxy`` reaches SeaweedFS through the test's throttling,
fault-injecting proxy; ``aws_default`` reaches it directly.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_s3_publisher import S3FetchOperator, S3PublishOperator, TransferOptions

MiB = 1024 * 1024
#: Small parts, two at a time: a throttled upload stays in flight long enough to be interrupted.
SLOW_TRANSFER = TransferOptions(part_size=5 * MiB, multipart_threshold=5 * MiB, concurrency=2, max_attempts=1)
PARAMS = {
    "bucket": Param("celery-test", type="string"),
    "size": Param(48 * MiB, type="integer"),
    "seed": Param(1, type="integer"),
    "files": Param(24, type="integer"),
}


def scratch() -> str:
    """This worker's scratch folder (``S3PUB_SCRATCH``), for templates rendered on the worker."""
    return os.environ.get("S3PUB_SCRATCH") or tempfile.gettempdir()


def safe(run_id: str) -> str:
    return run_id.replace(":", "_").replace("+", "_")


MACROS = {"scratch": scratch, "safe": safe}
FETCH_INTO = "{{ scratch() }}/fetched/{{ dag.dag_id }}/{{ safe(run_id) }}"


def random_bytes(seed: int, size: int) -> bytes:
    """Incompressible test data, the same for the same seed on every worker."""
    return random.Random(seed).randbytes(size)


def plain_files(count: int) -> dict[str, bytes]:
    """Small files of a plain publish: name -> content, the same on every worker."""
    return {f"files/f{i:03d}.txt": (f"file {i:03d}\n" * (6000 + i)).encode() for i in range(count)}


def write_big(folder: Path, seed: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "big.bin").write_bytes(random_bytes(seed, size))


# ---------------------------------------------------------------------------------------------- handoff
with DAG("celery_handoff", schedule=None, catchup=False, params=PARAMS, user_defined_macros=MACROS):

    @task(queue="a")
    def produce(**context: object) -> str:
        """Write the output into worker A's scratch folder (it stays there)."""
        folder = Path(scratch(), "produced", safe(str(context["run_id"])))
        folder.mkdir(parents=True)
        (folder / "report.csv").write_text(f"host,run\n{socket.gethostname()},{context['run_id']}\n")
        (folder / "data" / "values.bin").parent.mkdir()
        (folder / "data" / "values.bin").write_bytes(hashlib.sha256(str(context["run_id"]).encode()).digest() * 512)
        return str(folder)

    produced = produce()
    handoff_publish = S3PublishOperator(
        task_id="publish",
        queue="a",
        source=produced,
        bucket="{{ params.bucket }}",
        key="handoff/{jobID}/{nodeID}",
        compress=True,
    )
    S3FetchOperator(task_id="fetch", queue="b", source=handoff_publish.output, destination=FETCH_INTO)


# ---------------------------------------------------------------------------------------------- mapped
with DAG("celery_mapped", schedule=None, catchup=False, params=PARAMS, user_defined_macros=MACROS):

    @task.s3_publish(
        queue="shared", bucket="{{ params.bucket }}", key="mapped/{jobID}/{mapIndex}-{nodeID}", compress=True
    )
    def part(n: int, output_dir: str) -> None:
        Path(output_dir, f"part-{n}.txt").write_text(f"part {n}\n" * (n + 1))

    part.expand(n=list(range(32)))


# ---------------------------------------------------------------------------------------------- worker killed
with DAG("celery_worker_killed", schedule=None, catchup=False, params=PARAMS, user_defined_macros=MACROS):

    @task.s3_publish(
        queue="handover",
        retries=1,
        retry_delay=timedelta(seconds=1),
        bucket="{{ params.bucket }}",
        key="killed/{jobID}",  # the same key on every try: a retry cleans up what its predecessor left
        compress=True,
        compression_level=1,
        aws_conn_id="s3_proxy",
        transfer=SLOW_TRANSFER,
    )
    def big_archive(output_dir: str, **context: object) -> None:
        params: Any = context["params"]
        write_big(Path(output_dir), params["seed"], params["size"])

    killed_publish = big_archive()
    S3FetchOperator(task_id="fetch", queue="b", source=killed_publish, destination=FETCH_INTO, aws_conn_id="s3_proxy")


# ---------------------------------------------------------------------------------------------- execution_timeout
with DAG("celery_timeout", schedule=None, catchup=False, params=PARAMS, user_defined_macros=MACROS):

    @task(queue="a")
    def produce_big(**context: object) -> str:
        params: Any = context["params"]
        folder = Path(scratch(), "produced", safe(str(context["run_id"])))
        write_big(folder, params["seed"], params["size"])
        return str(folder)

    S3PublishOperator(
        task_id="publish",
        queue="a",
        source=produce_big(),
        bucket="{{ params.bucket }}",
        key="timeout/{jobID}",
        compress=True,
        compression_level=1,
        aws_conn_id="s3_proxy",
        transfer=SLOW_TRANSFER,
        execution_timeout=timedelta(seconds=10),
    )


# ---------------------------------------------------------------------------------------------- marked failed
with DAG("celery_marked_failed", schedule=None, catchup=False, params=PARAMS, user_defined_macros=MACROS):

    @task(queue="a")
    def produce_archive_input(**context: object) -> str:
        params: Any = context["params"]
        folder = Path(scratch(), "produced", safe(str(context["run_id"])))
        write_big(folder, params["seed"], params["size"])
        return str(folder)

    # The classic operator on worker A (an archive) and the decorator on worker B (a plain publish with
    # a manifest), both marked failed while their multipart uploads are in flight.
    S3PublishOperator(
        task_id="publish_operator",
        queue="a",
        source=produce_archive_input(),
        bucket="{{ params.bucket }}",
        key="marked/{jobID}/archive",
        compress=True,
        compression_level=1,
        aws_conn_id="s3_proxy",
        transfer=SLOW_TRANSFER,
    )

    @task.s3_publish(
        queue="b",
        bucket="{{ params.bucket }}",
        key="marked/{jobID}/plain/",
        manifest=True,
        aws_conn_id="s3_proxy",
        transfer=SLOW_TRANSFER,
    )
    def publish_decorated(output_dir: str, **context: object) -> None:
        params: Any = context["params"]
        for rel, data in plain_files(params["files"]).items():
            Path(output_dir, rel).parent.mkdir(parents=True, exist_ok=True)
            Path(output_dir, rel).write_bytes(data)
        write_big(Path(output_dir), params["seed"], params["size"])

    publish_decorated()


# ---------------------------------------------------------------------------------------------- plain retry
with DAG("celery_plain_retry", schedule=None, catchup=False, params=PARAMS, user_defined_macros=MACROS):

    @task.s3_publish(
        queue="handover",
        retries=1,
        retry_delay=timedelta(seconds=5),  # time for the test to take the queue away from worker A
        bucket="{{ params.bucket }}",
        key="plain-retry/{jobID}/",
        manifest=True,
        aws_conn_id="s3_proxy",
        transfer=SLOW_TRANSFER,
    )
    def plain(output_dir: str, **context: object) -> None:
        params: Any = context["params"]
        for rel, data in plain_files(params["files"]).items():
            Path(output_dir, rel).parent.mkdir(parents=True, exist_ok=True)
            Path(output_dir, rel).write_bytes(data)

    plain()
