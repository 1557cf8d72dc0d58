"""Running the example DAGs with real Airflow (``dag.test()``) in a throwaway AIRFLOW_HOME.

``configure_airflow_home()`` must run before anything imports Airflow: conftest.py calls it first.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "dags_examples"


def configure_airflow_home() -> Path:
    """Point Airflow at a fresh temp home with a SQLite DB and an empty DAGs folder."""
    home = Path(tempfile.mkdtemp(prefix="s3pub-airflow-"))
    (home / "dags").mkdir()
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    )
    # The tests decide credentials themselves; nothing may leak in from the machine.
    for name in list(os.environ):
        if name.startswith(("AWS_", "AIRFLOW_CONN_")):
            del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = str(home / "no-aws-config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "no-aws-credentials")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    return home


def init_db() -> None:
    """Create the metadata DB (what ``airflow db migrate`` does on a fresh database)."""
    from airflow.utils import db

    db.initdb()


def install_examples(dags_folder: Path) -> None:
    """Copy the example DAGs (and the sample data they ship with) into the DAGs folder."""
    for item in EXAMPLES.iterdir():
        target = dags_folder / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        elif item.suffix == ".py":
            shutil.copy(item, target)


@dataclass
class DagRunOutcome:
    """What a finished run left behind."""

    state: str
    run_id: str
    xcoms: dict[tuple[str, int], Any]  # (task_id, map_index) -> return_value
    links: dict[tuple[str, str], Any]  # (task_id, xcom key) -> extra link URL
    task_states: dict[str, str]


def load_dag(dags_folder: Path, file_name: str) -> Any:
    """Import a DAG file from the DAGs folder and return its ``dag``."""
    path = dags_folder / file_name
    module_name = f"dag_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.dag


def run_dag(
    dags_folder: Path, file_name: str, dag_id: str, conf: dict[str, Any], logical_date: datetime | None
) -> DagRunOutcome:
    """Import ``file_name`` from the DAGs folder and run ``dag_id`` with ``dag.test()``."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = load_dag(dags_folder, file_name)
    assert dag.dag_id == dag_id
    share_in_process_execution_api()
    dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    with create_session() as session:
        rows = session.execute(
            select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == dag_run.run_id
            )
        ).all()
        states = session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
    xcoms = {
        (task_id, map_index): XComModel.deserialize_value(_Row(value))
        for task_id, map_index, key, value in rows
        if key == "return_value"
    }
    links = {
        (task_id, key): XComModel.deserialize_value(_Row(value))
        for task_id, _map_index, key, value in rows
        if key.startswith("_link_")
    }
    return DagRunOutcome(
        state=str(dag_run.state),
        run_id=dag_run.run_id,
        xcoms=xcoms,
        links=links,
        task_states={task_id: str(state) for task_id, state in states},
    )


def share_in_process_execution_api() -> None:
    """Build dag.test()'s in-process execution API once per process, as Airflow 3.3 itself does.

    Each task that dag.test() runs talks to the execution API through ``in_process_api_server()``.
    Airflow 3.3 caches it (``functools.lru_cache``); Airflow 3.1 builds a new one for every task, and
    building its versioned FastAPI app costs about 1.5 s of CPU: most of a 16-task run. What the tasks
    do and what the tests check is the same either way.
    """
    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


class _Row:
    """The shape XComModel.deserialize_value expects."""

    def __init__(self, value: Any) -> None:
        self.value = value
