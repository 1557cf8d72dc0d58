"""Test DAG: a BashOperator publishes with ``airflow-s3-publisher publish``, an S3FetchOperator fetches
what its XCom (the printed JSON line) says, and an S3PublishOperator renders the same key template."""

from __future__ import annotations

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param

from airflow_s3_publisher import S3FetchOperator, S3PublishOperator

#: Every run placeholder; the task id first, so the two publishing tasks differ only there.
KEY = "keys/{taskID}/{jobID}/{dagID}/{runID}/{tryNumber}/{mapIndex}"

with DAG(
    dag_id="shell_publish",
    schedule=None,
    catchup=False,
    params={
        "bucket": Param("demo-results", type="string"),
        "cli": Param("airflow-s3-publisher", type="string"),
        "source": Param("/tmp/source", type="string"),
        "fetch_root": Param("/tmp/fetched", type="string"),
    },
) as dag:
    shell = BashOperator(
        task_id="bash_publish",
        bash_command=(
            "{{ params.cli }} publish '{{ params.source }}' 's3://{{ params.bucket }}/" + KEY + "' "
            "--compress --map-index '{{ ti.map_index }}' --exclude '*.tmp'"
        ),
    )
    operator = S3PublishOperator(
        task_id="op_publish",
        source="{{ params.source }}",
        publisher="s3://{{ params.bucket }}/" + KEY,
        compress=True,
        exclude=["*.tmp"],
    )
    fetch = S3FetchOperator(task_id="fetch", source=shell.output, destination="{{ params.fetch_root }}")
