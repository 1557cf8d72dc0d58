"""TaskFlow: ``@task.s3_publish`` hands the function an empty directory and publishes what it wrote.

Writing and publishing happen in the same task on the same worker, so this works on every executor
(Celery and Kubernetes included). Each publish also emits an Asset event through the AssetAlias
``s3-publisher-reports``; ``example_s3_asset_consumer.py`` is scheduled on it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from airflow.sdk import DAG, Param, task

ALIAS = "s3-publisher-reports"

with DAG(
    dag_id="s3_publish_taskflow",
    schedule=None,
    catchup=False,
    params={"bucket": Param("demo-results", type="string")},
    tags=["airflow-s3-publisher", "example"],
) as dag:

    @task.s3_publish(publisher="s3://{{ params.bucket }}/taskflow/{jobID}", compress=True, asset_alias=ALIAS)
    def build_report(output_dir: str, run_id: str | None = None) -> None:
        """Write a small report; the decorator publishes ``output_dir`` as one tar.gz."""
        with open(Path(output_dir, "report.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["run_id", "rows"])
            writer.writerow([run_id, 3])
        Path(output_dir, "logs").mkdir()
        Path(output_dir, "logs", "build.log").write_text("built\n")

    build_report()
