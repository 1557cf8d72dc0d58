"""Publish a directory to S3, plain (one object per file), in both of Bacalhau's spec forms.

Settings come from the Airflow AWS connection ``aws_default`` (credentials, endpoint) and from the
DAG params below, so the same file runs against AWS, MinIO or a local SeaweedFS.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_s3_publisher import S3PublishOperator, publish

SAMPLE = Path(__file__).parent / "sample_output"  # ships with the DAG files, so every worker has it

with DAG(
    dag_id="s3_publish_directory",
    schedule=None,
    catchup=False,
    params={"bucket": Param("demo-results", type="string")},
    tags=["airflow-s3-publisher", "example"],
) as dag:
    # Imperative form: Bacalhau's `-p s3://bucket/key,opt=...` string. Jinja renders first
    # ({{ params.bucket }}), then the placeholders ({jobID}, {date}...).
    publish_uri = S3PublishOperator(
        task_id="publish_uri",
        source=str(SAMPLE),
        publisher="s3://{{ params.bucket }}/plain/{jobID}/{date}",
    )

    # Declarative form: Bacalhau's YAML/JSON spec as a dict.
    publish_dict = S3PublishOperator(
        task_id="publish_dict",
        source=str(SAMPLE / "tables" / "weather.csv"),
        publisher={"Type": "s3", "Params": {"Bucket": "{{ params.bucket }}", "Key": "single/{dagID}/{runID}"}},
    )

    @task
    def produce_and_publish() -> dict[str, object]:
        """Write output and publish it from the same task: no disk is shared between tasks."""
        context = get_current_context()
        with tempfile.TemporaryDirectory() as out:
            (Path(out) / "report.txt").write_text(f"run {context['run_id']}\n")
            result = publish(
                out, f"s3://{context['params']['bucket']}/reports/{{jobID}}/{{executionID}}", context=context
            )
        return result.to_dict()

    produce_and_publish()
