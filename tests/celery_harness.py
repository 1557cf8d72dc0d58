"""Airflow with the CeleryExecutor, as it is deployed: Postgres, Redis, api-server, scheduler, dag-processor
and Celery workers that each behave like a machine of their own.

Extends :class:`tests.deployment_harness.AirflowDeployment` (same processes, REST helpers and teardown by
session). Each worker gets:

- its own host name: it runs in a UTS namespace of its own (``unshare --uts``, root only) whose host name
  is the worker's name, so ``socket.gethostname()`` (the publisher's ``{nodeID}``) and ``socket.getfqdn()``
  (Airflow's ``ti.hostname``) name it, as on a separate machine;
- its own scratch space: ``TMPDIR`` and ``S3PUB_SCRATCH`` (the folder the test DAGs write to and fetch
  into) below ``<root>/<worker>/``;
- its own queues (``airflow celery worker -q``), which the test can move between workers with Celery's
  remote control (``add_consumer`` / ``cancel_consumer``), as an operator drains a worker.

Every worker shares the deployment's AIRFLOW_HOME, so its task logs land where the api-server reads them
(``--skip-serve-logs``: one machine, one log-server port).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.deployment_harness import (
    COMPONENTS,
    AirflowDeployment,
    DeploymentError,
    _parent_death_signal,
    _session_members,
    _tail,
)

#: Run in the worker's new UTS namespace: set the host name, then exec the worker.
_SET_HOSTNAME_AND_EXEC = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"
_WORKER_READY_TIMEOUT = 120.0


@dataclass
class Worker:
    """A Celery worker of the deployment."""

    name: str
    """Its host name, and Celery's node name ``celery@<name>``."""
    queues: tuple[str, ...]
    concurrency: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"celery@{self.name}"

    @property
    def scratch(self) -> Path:
        """Where its tasks write their output and fetch into (``$S3PUB_SCRATCH``)."""
        return self.folder / "scratch"

    @property
    def tmp(self) -> Path:
        """Its ``TMPDIR``."""
        return self.folder / "tmp"


class CeleryDeployment(AirflowDeployment):
    """An Airflow deployment whose tasks run on Celery workers; the metadata DB is Postgres.

    :param database_url: SQLAlchemy URL of an empty Postgres database.
    :param broker_url: the Redis broker, ``redis://127.0.0.1:PORT/0``.
    """

    def __init__(
        self, root: Path, dags_folder: Path, extra_env: Mapping[str, str], *, database_url: str, broker_url: str
    ) -> None:
        self.broker_url = broker_url
        celery = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "32",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            # The result backend defaults to the metadata DB (db+postgresql...), as in most deployments.
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",  # 1 s by default: too short on two busy cores
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            # A worker killed outright stops heartbeating: its task is failed (and retried) after this.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "12",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        }
        super().__init__(root, dags_folder, {**celery, **extra_env})
        self.workers: dict[str, Worker] = {}
        self._worker_outputs: dict[str, IO[bytes]] = {}

    # ------------------------------------------------------------------ workers
    def start_worker(self, name: str, queues: Sequence[str], concurrency: int = 2) -> Worker:
        """Start worker ``name`` (its host name) consuming ``queues``; return once Celery reports it ready."""
        worker = self.workers.get(name) or Worker(name, tuple(queues), concurrency, self.root / name)
        worker.scratch.mkdir(parents=True, exist_ok=True)
        worker.tmp.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "TMPDIR": str(worker.tmp), "S3PUB_SCRATCH": str(worker.scratch)}
        command = [
            "unshare",
            "--uts",
            "--",
            sys.executable,
            "-c",
            _SET_HOSTNAME_AND_EXEC,
            name,
            sys.executable,
            "-m",
            "airflow",
            "celery",
            "worker",
            "--queues",
            ",".join(worker.queues),
            "--concurrency",
            str(worker.concurrency),
            "--celery-hostname",
            name,
            "--skip-serve-logs",
        ]
        output = self._worker_outputs.get(name) or (self.root / f"{name}.out").open("ab")
        self._worker_outputs[name] = output
        began = time.monotonic()
        worker.process = subprocess.Popen(
            command,
            env=env,
            cwd=worker.folder,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )
        self.workers[name] = worker
        self._processes[name] = worker.process
        self.wait_for(f"worker {name}", lambda: set(worker.queues) <= set(self.queues_of(name)), _WORKER_READY_TIMEOUT)
        self.timings[f"start {name}"] = time.monotonic() - began
        return worker

    def kill_worker(self, name: str) -> None:
        """SIGKILL every process of the worker (main process, pool processes, task supervisors, tasks)."""
        worker = self.workers[name]
        assert worker.process is not None
        self._processes.pop(name, None)
        for pid in _session_members(worker.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.process.wait()
        deadline = time.monotonic() + 30
        while _session_members(worker.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        worker.process = None

    def ensure_workers(self) -> None:
        """Start again every worker that is not running (after a test killed one)."""
        for name, worker in self.workers.items():
            if worker.process is None or worker.process.poll() is not None:
                self._processes.pop(name, None)
                self.start_worker(name, worker.queues, worker.concurrency)

    # ------------------------------------------------------------------ Celery remote control
    def _control(self) -> Any:
        from celery import Celery

        return Celery(broker=self.broker_url).control

    def queues_of(self, name: str) -> list[str]:
        """The queues worker ``name`` consumes now, as it answers Celery's ``active_queues``."""
        answer = self._control().inspect(timeout=2, destination=[f"celery@{name}"]).active_queues() or {}
        return [queue["name"] for queue in answer.get(f"celery@{name}", [])]

    def move_queue(self, queue: str, source: str | None, target: str | None) -> None:
        """Make worker ``target`` consume ``queue`` and worker ``source`` stop consuming it (either may be None)."""
        control = self._control()
        if source is not None and self.workers[source].process is not None:
            control.cancel_consumer(queue, destination=[self.workers[source].node], reply=True, timeout=10)
            self.wait_for(f"{source} leaving {queue}", lambda: queue not in self.queues_of(source), 30)
        if target is not None:
            control.add_consumer(queue, destination=[self.workers[target].node], reply=True, timeout=10)
            self.wait_for(f"{target} consuming {queue}", lambda: queue in self.queues_of(target), 30)

    # ------------------------------------------------------------------ REST helpers for the scenarios
    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return dict(self.api("GET", path))

    def mapped_task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/listMapped?limit=1000"
        return list(self.api("GET", path)["task_instances"])

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of the task instance, as Airflow recorded it (try_number, hostname, state), in order."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/tries"
        tries = self.api("GET", path)["task_instances"]
        return sorted(tries, key=lambda t: int(t["try_number"]))

    def mark_failed(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Mark a task instance failed, as a user does in the UI (its running task is then stopped)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}"
        self.api("PATCH", path, {"new_state": "failed"})

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The task's log for one try, as the api-server serves it (one line per event)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        content = self.api("GET", path + "?full_content=true")["content"]
        lines = []
        for event in content:
            if isinstance(event, dict):
                extra = {k: v for k, v in event.items() if k not in ("event", "timestamp", "level", "logger")}
                lines.append(f"{event.get('level', '')} {event.get('event', '')} {extra if extra else ''}".strip())
            else:
                lines.append(str(event))
        return "\n".join(lines)

    # ------------------------------------------------------------------ lifecycle and diagnostics
    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for output in self._worker_outputs.values():
                output.close()
            self._worker_outputs.clear()

    def check_alive(self) -> None:
        for name, proc in self._processes.items():
            code = proc.poll()
            if code is not None:
                raise DeploymentError(f"{name} exited with code {code}\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        parts = [super().diagnostics()]
        for name in self.workers:
            parts.append(f"----- {name} (tail) -----\n{_tail(self.root / f'{name}.out')}")
        return "\n".join(parts)

    def processes(self) -> dict[str, list[int]]:
        """The pids of each component's session (workers included), for measuring the deployment."""
        found: dict[str, list[int]] = {}
        for name, proc in list(self._processes.items()):  # a test may start or kill a worker meanwhile
            found[name] = _session_members(proc.pid)
        return found


def _quote(run_id: str) -> str:
    import urllib.parse

    return urllib.parse.quote(run_id, safe="")


__all__ = ["COMPONENTS", "CeleryDeployment", "Worker"]
