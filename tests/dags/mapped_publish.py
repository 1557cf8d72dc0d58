"""Test DAG: a mapped @task.s3_publish with 16 map indexes, each publishing its own archive."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="s3_publish_mapped",
    schedule=None,
    catchup=False,
    params={"bucket": Param("demo-results", type="string")},
) as dag:

    @task.s3_publish(publisher="s3://{{ params.bucket }}/mapped/{jobID}/{mapIndex}", compress=True)
    def part(n: int, output_dir: str) -> None:
        Path(output_dir, f"part-{n}.txt").write_text(f"part {n}\n" * (n + 1))

    part.expand(n=list(range(16)))
