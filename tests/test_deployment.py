"""The example DAGs in a deployed Airflow: scheduler, dag-processor and api-server as separate processes.

No Airflow code runs in the test process: ``airflow db migrate`` creates a fresh SQLite metadata DB in a home of
its own, the dag-processor parses a copy of ``dags_examples/``, runs are triggered through the REST API,
the scheduler's LocalExecutor runs each task in its own process, and the outcome is read back through
the REST API and from SeaweedFS. The asset-triggered consumer is started by the scheduler alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.airflow_harness import EXAMPLES
from tests.support import archive_members, objects_below, read_tree, sha256_b64
from tools.seaweed import ADMIN, REGION, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.deployment_harness import AirflowDeployment

ROUNDTRIP = "s3_publish_fetch_roundtrip"
PRODUCER = "s3_publish_taskflow"
CONSUMER = "s3_asset_consumer"
RUN_TIMEOUT = 180.0

SAMPLE = read_tree(EXAMPLES / "sample_output")


@pytest.fixture(scope="module")
def deployment(airflow_deployment: AirflowDeployment) -> AirflowDeployment:
    """The session's deployment (tests/conftest.py): ``aws_default`` is SeaweedFS's ADMIN identity."""
    return airflow_deployment


def _check_published_result(result: Any, bucket: str, endpoint: str, s3: S3Client) -> bytes:
    """``result`` is a compressed PublishedResult for the only object in ``bucket``; that object's bytes."""
    assert result["Type"] == "s3"
    params = result["Params"]
    assert set(params) == {"Bucket", "Key", "Region", "Endpoint", "VersionID", "ChecksumSHA256"}
    assert (params["Bucket"], params["Region"], params["Endpoint"]) == (bucket, REGION, endpoint)
    assert params["Key"].endswith(".tar.gz")
    stored = objects_below(s3, bucket)
    assert list(stored) == [params["Key"]]
    assert params["ChecksumSHA256"] == sha256_b64(stored[params["Key"]])
    return stored[params["Key"]]


def _lineage_completes(root: Path, run_id: str) -> dict[str, dict[str, list[dict[str, str]]]] | None:
    """Datasets of the COMPLETE events of the publish and fetch tasks of the run ``run_id``, by job name."""
    found: dict[str, dict[str, list[dict[str, str]]]] = {}
    for path in (root / "openlineage").iterdir():
        event = json.loads(path.read_text())
        facets = event["run"].get("facets", {}).get("airflow", {}).get("dagRun", {})
        if event["eventType"] != "COMPLETE" or facets.get("run_id") != run_id:
            continue
        found[event["job"]["name"]] = {
            side: [{"namespace": d["namespace"], "name": d["name"]} for d in event.get(side, [])]
            for side in ("inputs", "outputs")
        }
    wanted = (f"{ROUNDTRIP}.publish", f"{ROUNDTRIP}.fetch")
    return found if all(name in found for name in wanted) else None


def test_roundtrip_dag_in_deployed_airflow(
    deployment: AirflowDeployment, seaweed: SeaweedServer, bucket: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    with deployment.diagnosed():
        deployment.unpause(ROUNDTRIP)
        run_id = deployment.trigger(ROUNDTRIP, {"bucket": bucket, "fetch_root": str(tmp_path / "fetched")})
        state = deployment.wait_run_finished(ROUNDTRIP, run_id, RUN_TIMEOUT)
        assert state == "success", deployment.task_states(ROUNDTRIP, run_id)

        result = deployment.xcom(ROUNDTRIP, run_id, "publish")
        stored = _check_published_result(result, bucket, seaweed.endpoint, s3_admin)
        assert result["Params"]["Key"].startswith(f"archives/{ROUNDTRIP}__")
        assert archive_members(stored) == SAMPLE

        fetched = Path(deployment.xcom(ROUNDTRIP, run_id, "fetch"))
        assert fetched.parent == tmp_path / "fetched"
        assert read_tree(fetched) == SAMPLE
        digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in SAMPLE.items()}
        assert deployment.xcom(ROUNDTRIP, run_id, "check") == digests

        # The openlineage provider's listener, in each task's own process, reported the S3 dataset:
        # written by the publish task, read by the fetch task, named as the amazon provider names it.
        dataset = {"namespace": f"s3://{bucket}", "name": result["Params"]["Key"]}
        events = deployment.wait_for(
            "the OpenLineage COMPLETE events", lambda: _lineage_completes(deployment.root, run_id), 60
        )
        assert dataset in events[f"{ROUNDTRIP}.publish"]["outputs"]
        assert dataset in events[f"{ROUNDTRIP}.fetch"]["inputs"]


def test_two_runs_in_parallel_each_publish_their_own_objects(
    deployment: AirflowDeployment, bucket: str, s3_admin: S3Client
) -> None:
    dag_id = "s3_publish_directory"
    with deployment.diagnosed():
        deployment.unpause(dag_id)
        run_ids = [deployment.trigger(dag_id, {"bucket": bucket}) for _ in range(2)]
        for run_id in run_ids:
            state = deployment.wait_run_finished(dag_id, run_id, RUN_TIMEOUT)
            assert state == "success", deployment.task_states(dag_id, run_id)
        keys = set()
        for run_id in run_ids:
            params = deployment.xcom(dag_id, run_id, "publish_uri")["Params"]
            keys.add(params["Key"])
            stored = objects_below(s3_admin, bucket, params["Key"])
            assert stored == {params["Key"] + rel: data for rel, data in SAMPLE.items()}
        assert len(keys) == 2  # {jobID} keeps the runs apart


def test_asset_alias_event_triggers_the_consumer_dag(
    deployment: AirflowDeployment, seaweed: SeaweedServer, bucket: str, s3_admin: S3Client
) -> None:
    fetched: Path | None = None
    try:
        with deployment.diagnosed():
            deployment.unpause(CONSUMER)  # before the producer runs: its event queues only unpaused DAGs
            deployment.unpause(PRODUCER)
            run_id = deployment.trigger(PRODUCER, {"bucket": bucket})
            state = deployment.wait_run_finished(PRODUCER, run_id, RUN_TIMEOUT)
            assert state == "success", deployment.task_states(PRODUCER, run_id)
            result = deployment.xcom(PRODUCER, run_id, "build_report")
            stored = _check_published_result(result, bucket, seaweed.endpoint, s3_admin)
            assert run_id in archive_members(stored)["report.csv"].decode()

            # Nobody triggers the consumer: the scheduler does, on the event emitted through the alias.
            def consumer_finished() -> dict[str, Any] | None:
                done = [r for r in deployment.runs(CONSUMER) if r["state"] in ("success", "failed")]
                return done[0] if done else None

            consumer = deployment.wait_for(f"{CONSUMER} run", consumer_finished, RUN_TIMEOUT)
            consumer_run = consumer["dag_run_id"]
            assert consumer["run_type"] == "asset_triggered"
            assert consumer["state"] == "success", deployment.task_states(CONSUMER, consumer_run)
            assert len(deployment.runs(CONSUMER)) == 1

            events = deployment.upstream_asset_events(CONSUMER, consumer_run)
            assert [(e["source_dag_id"], e["source_run_id"]) for e in events] == [(PRODUCER, run_id)]
            assert events[0]["uri"] == f"s3://{bucket}/{result['Params']['Key']}"
            assert events[0]["extra"] == result

            fetched = Path(deployment.xcom(CONSUMER, consumer_run, "fetch"))
            report = deployment.xcom(CONSUMER, consumer_run, "read_report")
            assert run_id in report
            assert report.splitlines() == archive_members(stored)["report.csv"].decode().splitlines()
    finally:
        if fetched is not None:  # the consumer DAG fetches below a fixed directory in /tmp
            shutil.rmtree(fetched, ignore_errors=True)
            with contextlib.suppress(OSError):
                fetched.parent.rmdir()


def test_no_credential_in_the_deployment_files(deployment: AirflowDeployment) -> None:
    """After the runs above: the S3 secret is in no log, no metadata DB row, no generated config."""
    files = [path for path in deployment.root.rglob("*") if path.is_file()]
    assert any(path.name == "airflow.db" for path in files)
    assert [path for path in files if ADMIN.secret_key.encode() in path.read_bytes()] == []
