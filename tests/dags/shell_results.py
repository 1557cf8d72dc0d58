"""Test DAGs for ``airflow-s3-publisher list/get DAG_ID RUN_ID``: one run publishes a compressed, a plain
(with manifest) and a mapped result, plus one from a BashOperator running ``airflow-s3-publisher publish``;
another publishes nothing. The files come from the run's conf (``tree``: relative path -> base64 content)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, task

PARAMS = {
    "bucket": Param("demo-results", type="string"),
    "tree": Param({}, type="object"),
    "cli": Param("airflow-s3-publisher", type="string"),
}


def write_tree(root: str, tree: dict[str, str]) -> None:
    for rel, data in tree.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


with DAG(dag_id="shell_results", schedule=None, catchup=False, params=PARAMS) as dag:

    @task.s3_publish(publisher="s3://{{ params.bucket }}/runs/{jobID}/archive", compress=True)
    def archive(output_dir: str, params: dict[str, Any]) -> None:
        write_tree(output_dir, params["tree"])

    @task.s3_publish(publisher="s3://{{ params.bucket }}/runs/{jobID}/plain/", manifest=True)
    def plain(output_dir: str, params: dict[str, Any]) -> None:
        write_tree(output_dir, params["tree"])

    @task.s3_publish(publisher="s3://{{ params.bucket }}/runs/{jobID}/part-{mapIndex}", compress=True)
    def part(n: int, output_dir: str) -> None:
        Path(output_dir, f"part-{n}.txt").write_text(f"part {n}\n" * (n + 1))

    @task
    def note() -> dict[str, int]:
        return {"rows": 3}  # a return value, but no PublishedResult

    shell = BashOperator(
        task_id="shell",
        bash_command=(
            'd="$(mktemp -d)" && printf "from the shell\\n" > "$d/shell.txt" && '
            "{{ params.cli }} publish \"$d\" 's3://{{ params.bucket }}/runs/{jobID}/{taskID}' --compress -q; "
            'status=$?; rm -rf "$d"; exit $status'
        ),
    )

    archive()
    plain()
    part.expand(n=[0, 1, 2])
    note()


with DAG(dag_id="shell_results_none", schedule=None, catchup=False) as nothing:

    @task
    def only_a_number() -> int:
        return 42

    only_a_number()
