"""Child process of the benchmark: runs ONE Python job and writes a JSON report.

Usage: ``python child.py JOB_JSON REPORT_PATH``. Jobs:

* ``publish``: ``airflow_s3_publisher.publish(source, bucket=, key=, compress=, aws_conn_id=)``, with
  ``manifest=True`` when the job says ``"manifest": true``;
* ``fetch``: ``airflow_s3_publisher.fetch(result, destination, aws_conn_id=)``;
* ``boto3``: ``upload_file`` of every file of ``source`` with ``threads`` threads and one client.

``publish`` and ``fetch`` take an optional ``"engine"`` (``auto``, ``native``, ``boto3``), passed as
``transfer=TransferOptions(engine=...)``; without it the package's defaults apply (so the job runs on a
package that predates the option). Their report's ``extra.engines`` names the request engines the call
used for many small objects (``native``, ``boto3``; empty when it needed none, e.g. one archive).

The environment (AIRFLOW_HOME, AIRFLOW_CONN_BENCH, ...) is set by the parent. Everything is imported
before the clock starts (for ours: Airflow and the Amazon provider's S3Hook, as in a worker). The
report carries the call's wall and CPU seconds, the server's and other processes' CPU seconds over
the same interval, the peak RSS of this process (VmHWM) and its RSS just before the call.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib.runners import CpuClock, foreign_cpu, proc_status_bytes, system_busy_seconds  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _preload_airflow() -> None:
    """Import what an Airflow worker has loaded before a task runs: Airflow, the Amazon provider's hook and
    the task supervisor (a task process is forked from it, so it has it loaded; a connection lookup
    imports it, 0.025 s, when it is not).

    ``publish()`` imports ``S3Hook`` lazily (several seconds on a cold interpreter); timing that would
    measure Python's import system, not the transfer.
    """
    import airflow.providers.amazon.aws.hooks.s3  # noqa: F401
    import airflow.sdk.execution_time.supervisor  # noqa: F401


def _transfer(job: dict[str, Any]) -> dict[str, Any]:
    """``{"transfer": TransferOptions(engine=...)}`` when the job names an engine, else nothing."""
    engine = job.get("engine")
    if not engine:
        return {}
    from dataclasses import fields

    from airflow_s3_publisher.options import TransferOptions

    if "engine" not in {item.name for item in fields(TransferOptions)}:
        raise RuntimeError(f"engine={engine!r} asked, but this airflow_s3_publisher's TransferOptions has no engine")
    return {"transfer": TransferOptions(engine=str(engine))}


_ENGINES_USED: list[str] = []  # appended from the engine choice, read after the call


def _record_engines() -> None:
    """Note the class of every request engine the package picks (``BotoEngine`` -> ``boto3``).

    Wraps ``airflow_s3_publisher.s3.engine.select_engine`` when the package has it; without it the
    report just lists no engine.
    """
    try:
        from airflow_s3_publisher.s3 import engine as module
    except ImportError:
        return
    select = getattr(module, "select_engine", None)
    if select is None:
        return

    def recording(*args: Any, **kwargs: Any) -> Any:
        chosen = select(*args, **kwargs)
        name = type(chosen).__name__
        _ENGINES_USED.append({"BotoEngine": "boto3", "NativeEngine": "native"}.get(name, name))
        return chosen

    module.select_engine = recording


def _engines() -> list[str]:
    return sorted(set(_ENGINES_USED))


def _publish_job(job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    from airflow_s3_publisher import publish

    _preload_airflow()
    _record_engines()
    options = _transfer(job)
    if job.get("manifest"):
        options["manifest"] = True

    def call() -> dict[str, Any]:
        result = publish(
            job["source"],
            bucket=job["bucket"],
            key=job["key"],
            compress=bool(job["compress"]),
            aws_conn_id=job["conn_id"],
            **options,
        )
        return {"result": result.to_dict(), "engines": _engines()}

    return call


def _fetch_job(job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    from airflow_s3_publisher import fetch

    _preload_airflow()
    _record_engines()
    options = _transfer(job)

    def call() -> dict[str, Any]:
        fetch(job["result"], job["destination"], aws_conn_id=job["conn_id"], **options)
        return {"engines": _engines()}

    return call


def _boto3_job(job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    import boto3
    from botocore.config import Config

    source = Path(job["source"])
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    threads = int(job["threads"])

    def call() -> dict[str, Any]:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=job["endpoint"],
            region_name=job["region"],
            aws_access_key_id=job["access_key"],
            aws_secret_access_key=job["secret_key"],
            config=Config(max_pool_connections=threads, s3={"addressing_style": "path"}),
        )

        def upload(path: Path) -> None:
            name = path.name if source.is_file() else path.relative_to(source).as_posix()
            client.upload_file(str(path), job["bucket"], job["key"] + name)

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(upload, path) for path in files]:
                future.result()
        return {}

    return call


_JOBS = {"publish": _publish_job, "fetch": _fetch_job, "boto3": _boto3_job}


def main(argv: list[str]) -> int:
    job: dict[str, Any] = json.loads(argv[0])
    report = Path(argv[1])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = CpuClock(int(job["server_pid"])) if job.get("server_pid") else None
    try:
        call = _JOBS[job["kind"]](job)
    except Exception as err:  # an import that fails is a result to report (e.g. ours not installed)
        traceback.print_exc()
        report.write_text(json.dumps({"ok": False, "error": f"setup failed: {type(err).__name__}: {err}"}))
        return 1
    rss_base = proc_status_bytes("self", "VmRSS")
    server0 = server.seconds() if server else None
    busy0 = system_busy_seconds()
    cpu0 = _cpu()
    began = time.perf_counter()
    try:
        extra = call()
    except Exception as err:
        traceback.print_exc()
        report.write_text(json.dumps({"ok": False, "error": f"{type(err).__name__}: {err}"}))
        return 1
    seconds = time.perf_counter() - began
    cpu = _cpu() - cpu0
    server1 = server.seconds() if server else None
    server_cpu = server1 - server0 if server0 is not None and server1 is not None else None
    report.write_text(
        json.dumps(
            {
                "ok": True,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "server_cpu": server_cpu,
                "foreign_cpu": foreign_cpu(system_busy_seconds() - busy0, cpu, server_cpu),
                "rss_peak": proc_status_bytes("self", "VmHWM"),
                "rss_base": rss_base,
                "pid": os.getpid(),
                "extra": extra,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
