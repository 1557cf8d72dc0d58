"""Airflow deployed as separate processes (scheduler, dag-processor, api-server), as a user runs it.

The processes get their own AIRFLOW_HOME and environment, never the one conftest.py set up for the
in-process tests, and this module never imports Airflow: everything goes through the processes, the
``airflow`` CLI and the REST API, so nothing can depend on state inside the test process.

Every component is started in a new session (``setsid``); stopping sends SIGTERM, then SIGKILL, to each
process of those sessions, by pid. The task processes the LocalExecutor forks put themselves in their
own process groups, but they stay in the scheduler's session, so they are found and stopped too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

#: The components a deployment runs, in start order. No triggerer: no example DAG defers.
COMPONENTS = ("api-server", "dag-processor", "scheduler")
_COMMANDS = {
    "api-server": ["api-server"],  # host and port come from [api] host / port in the environment
    "dag-processor": ["dag-processor"],
    # The worker log server binds every interface (serve_logs has no host setting); the task logs are
    # local files here anyway.
    "scheduler": ["scheduler", "--skip-serve-logs"],
}
_STOP_GRACE_SECONDS = 15.0
_API_STOP_GRACE_SECONDS = 1.0
_TAIL_BYTES = 3000
_API_USER = "admin"


class DeploymentError(AssertionError):
    """Something in the deployment did not happen in time; the message carries the logs' tails."""


class ApiError(AssertionError):
    """The REST API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:_TAIL_BYTES]}")
        self.status = status


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _parent_death_signal() -> Callable[[], None] | None:
    """preexec_fn: the child gets SIGTERM if the test process dies without cleaning up."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def _tail(path: Path, limit: int = _TAIL_BYTES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - limit))
            return handle.read().decode(errors="replace")
    except OSError as error:
        return f"<cannot read {path}: {error}>"


class AirflowDeployment:
    """An Airflow installation in ``root``: ``airflow db migrate``, then the components as processes."""

    def __init__(self, root: Path, dags_folder: Path, extra_env: Mapping[str, str]) -> None:
        self.root = root
        self.home = root / "airflow-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder = dags_folder
        self.port = free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._password = secrets.token_urlsafe(16)
        self._passwords_file = root / "simple-auth-manager-passwords.json"
        self._passwords_file.write_text(json.dumps({_API_USER: self._password}))
        self._passwords_file.chmod(0o600)
        self.env = self._environment(extra_env)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: list[IO[bytes]] = []
        self._token: str | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ environment
    def _environment(self, extra_env: Mapping[str, str]) -> dict[str, str]:
        # Nothing Airflow- or AWS-related leaks in from the test process (conftest.py set its own home).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "PYTEST_"))}
        settings = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # The default executor, and Airflow 3 accepts it with SQLite: tasks reach the metadata DB only
            # through the api-server. Each task runs in a process of its own, forked by an executor worker.
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",  # executor worker processes; two cores
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            # The default auth manager, with a known password (it would generate one) for POST /auth/token.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{_API_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # shared by the scheduler and the API
            # What sets the pace of a short run (the heartbeat settings do not): how long an idle scheduler
            # loop sleeps (default 1 s) ...
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            # ... and how long a task supervisor may sleep (default 5 s): it notices that its task process
            # has exited only when it wakes up, and until then the task holds an executor slot (and the
            # scheduler's shutdown waits for it).
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # Every file is parsed at start-up; no re-parse during the test (the alias must work without).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "2",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AWS_CONFIG_FILE": str(self.root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(settings)
        env.update(extra_env)
        return env

    # ------------------------------------------------------------------ processes
    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run one ``airflow`` CLI command to completion; its output, or DeploymentError."""
        began = time.monotonic()
        with subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        ) as proc:
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in _session_members(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                output, _ = proc.communicate()
                tail = output.decode(errors="replace")[-_TAIL_BYTES:]
                raise DeploymentError(f"airflow {' '.join(args)} did not finish in {timeout:.0f} s:\n{tail}") from None
        self.timings[f"airflow {' '.join(args[:2])}"] = time.monotonic() - began
        text = output.decode(errors="replace")
        if proc.returncode != 0:
            raise DeploymentError(f"airflow {' '.join(args)} exited with {proc.returncode}:\n{text[-_TAIL_BYTES:]}")
        return text

    def start(self) -> None:
        for name in COMPONENTS:
            output = (self.root / f"{name}.out").open("ab")
            self._outputs.append(output)
            self._processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *_COMMANDS[name]],
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: every descendant can be found and stopped
                preexec_fn=_parent_death_signal(),  # only calls prctl(2): safe after fork
            )

    def stop(self) -> None:
        """Stop the scheduler and the dag-processor, then the api-server (running tasks report through it).

        Each process of a component's session gets SIGTERM, and SIGKILL if still there after the grace time.
        The api-server's grace is short: once uvicorn has stopped (at once), its interpreter spends seconds
        tearing the app down, and it has nothing left to save.
        """
        began = time.monotonic()
        try:
            self._stop_sessions([n for n in self._processes if n != "api-server"], _STOP_GRACE_SECONDS, began)
            self._stop_sessions([n for n in self._processes if n == "api-server"], _API_STOP_GRACE_SECONDS, began)
        finally:
            for output in self._outputs:
                output.close()
            self._outputs.clear()
            self.timings["stop"] = time.monotonic() - began

    def _stop_sessions(self, names: list[str], grace: float, began: float) -> None:
        processes = {name: self._processes[name] for name in names}
        for proc in processes.values():
            for pid in _session_members(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        pending = set(processes)
        while pending and time.monotonic() < deadline:
            time.sleep(0.1)
            for name in list(pending):
                processes[name].poll()  # reaps the leader once it exits
                if not _session_members(processes[name].pid):
                    pending.discard(name)
                    self.timings[f"stop {name}"] = time.monotonic() - began
        for proc in processes.values():
            for pid in _session_members(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()

    def check_alive(self) -> None:
        for name, proc in self._processes.items():
            code = proc.poll()
            if code is not None:
                raise DeploymentError(f"airflow {name} exited with code {code}\n{self.diagnostics()}")

    # ------------------------------------------------------------------ REST API
    def api(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """Call the REST API; the decoded JSON answer. ApiError for an error status."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self._get_token()}"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise ApiError(method, path, error.code, error.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    @property
    def api_user(self) -> tuple[str, str]:
        """The user name and password of the api-server's admin user."""
        return _API_USER, self._password

    def token(self) -> str:
        """A bearer token for the admin user."""
        return self._get_token()

    def _get_token(self) -> str:
        if self._token is None:
            credentials = {"username": _API_USER, "password": self._password}
            self._token = str(self.api("POST", "/auth/token", credentials, auth=False)["access_token"])
        return self._token

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Call ``probe`` until it returns something truthy; DeploymentError (with logs) after ``timeout``."""
        began = time.monotonic()
        deadline = began + timeout
        last_error = "no answer yet"
        while True:
            self.check_alive()
            try:
                result = probe()
            except ApiError as error:
                if error.status < 500:
                    raise
                last_error = str(error)
                result = None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:  # not up yet, or busy
                last_error = f"{type(error).__name__}: {error}"
                result = None
            if result:
                self.timings[what] = time.monotonic() - began
                return result
            if time.monotonic() >= deadline:
                raise DeploymentError(
                    f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})\n"
                    + self.diagnostics()
                )
            time.sleep(interval)

    def wait_ready(self, dag_ids: list[str], timeout: float) -> None:
        """Wait until the API answers and the dag-processor has registered every DAG in ``dag_ids``."""

        def healthy() -> bool:
            return bool(self.api("GET", "/api/v2/monitor/health", auth=False))

        self.wait_for("api-server", healthy, timeout)
        # The Execution API builds its routes on its first request (FastAPI's lazy router inclusion), which
        # can take longer than a task's 5 s request timeout on a busy machine: make that request now.
        self.wait_for("execution api", lambda: self.api("GET", "/execution/health", auth=False), timeout)

        def parsed() -> bool:
            known = {d["dag_id"] for d in self.api("GET", "/api/v2/dags?limit=100")["dags"]}
            return set(dag_ids) <= known

        self.wait_for("dags parsed", parsed, timeout)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")["state"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"])

    def wait_run_finished(self, dag_id: str, run_id: str, timeout: float) -> str:
        def finished() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        state: str = self.wait_for(f"{dag_id} run", finished, timeout)
        return state

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances")
        return {ti["task_id"]: str(ti["state"]) for ti in answer["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path)["value"]

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/upstreamAssetEvents")
        return list(answer["asset_events"])

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> str:
        """The tails of the components' output, of the DAG-processor's file logs and of the task logs."""
        parts = []
        for name in COMPONENTS:
            parts.append(f"----- airflow {name} (tail) -----\n{_tail(self.root / f'{name}.out')}")
        logs = self.home / "logs"
        for pattern, label, count in (
            ("dag_processor/**/*.log", "dag-processor file log", 4),
            ("dag_id=*/**/*.log", "task log", 8),
        ):
            files = sorted(logs.glob(pattern), key=lambda p: p.stat().st_mtime)[-count:]
            for path in files:
                parts.append(f"----- {label} {path.relative_to(logs)} (tail) -----\n{_tail(path, 2000)}")
        with contextlib.suppress(Exception):
            errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                parts.append(f"----- import errors -----\n{json.dumps(errors, indent=1)[-_TAIL_BYTES:]}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def diagnosed(self) -> Iterator[None]:
        """Print the diagnostics (pytest shows them with the failure) if the block raises."""
        try:
            yield
        except BaseException as error:
            if not isinstance(error, DeploymentError):  # those carry them in their message already
                print(self.diagnostics())
            raise


def _quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")
