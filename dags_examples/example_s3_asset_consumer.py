"""Scheduled on the publisher's AssetAlias: fetches exactly the version that triggered the run.

``S3FetchOperator`` without ``source`` reads the PublishedResult carried by the newest triggering
asset event (Bucket, Key, VersionID, ChecksumSHA256) and verifies what it downloads against it.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG, AssetAlias, task

from airflow_s3_publisher import S3FetchOperator

with DAG(
    dag_id="s3_asset_consumer",
    schedule=[AssetAlias("s3-publisher-reports")],
    catchup=False,
    tags=["airflow-s3-publisher", "example"],
) as dag:
    fetch = S3FetchOperator(
        task_id="fetch",
        destination="/tmp/airflow-s3-publisher-consumer/{{ run_id | replace(':', '-') | replace('+', '-') }}",
    )

    @task
    def read_report(fetched: str) -> str:
        """Runs where ``fetch`` ran (one machine, as with ``airflow standalone``)."""
        return Path(fetched, "report.csv").read_text()

    read_report(fetch.output)
