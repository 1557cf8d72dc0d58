"""Publish a directory as one tar.gz, hand its PublishedResult over XCom, fetch it back verified.

``S3FetchOperator`` downloads into a directory of the worker it runs on; ``check`` reads that
directory, so these two tasks assume one machine (``airflow standalone``, LocalExecutor). On
Celery or Kubernetes, call ``fetch()`` inside the task that uses the files instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from airflow.sdk import DAG, Param, task

from airflow_s3_publisher import S3FetchOperator, S3PublishOperator

SAMPLE = Path(__file__).parent / "sample_output"

with DAG(
    dag_id="s3_publish_fetch_roundtrip",
    schedule=None,
    catchup=False,
    params={
        "bucket": Param("demo-results", type="string"),
        "fetch_root": Param("/tmp/airflow-s3-publisher-fetch", type="string"),
    },
    tags=["airflow-s3-publisher", "example"],
) as dag:
    publish = S3PublishOperator(
        task_id="publish",
        source=str(SAMPLE),
        publisher={
            "Type": "s3",
            "Params": {"Bucket": "{{ params.bucket }}", "Key": "archives/{jobID}/{date}-{time}", "Compress": True},
        },
    )

    fetch = S3FetchOperator(
        task_id="fetch",
        source=publish.output,  # the PublishedResult dict: Bucket, Key, VersionID, ChecksumSHA256...
        destination="{{ params.fetch_root }}/{{ run_id | replace(':', '-') | replace('+', '-') }}",
    )

    @task
    def check(fetched: str) -> dict[str, str]:
        """Compare every fetched file with the source, byte for byte."""
        digests: dict[str, str] = {}
        for path in sorted(SAMPLE.rglob("*")):
            if path.is_file():
                rel = path.relative_to(SAMPLE).as_posix()
                got = Path(fetched, rel).read_bytes()
                if got != path.read_bytes():
                    raise ValueError(f"{rel} differs after the round trip")
                digests[rel] = hashlib.sha256(got).hexdigest()
        print(f"round trip verified: {len(digests)} files identical")
        return digests

    check(fetch.output)
