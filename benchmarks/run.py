"""Benchmark airflow-s3-publisher against s5cmd, rclone, aws-cli, boto3 and tar | pigz (issues #3 and #9).

    .venv/bin/python benchmarks/run.py [--quick] [--only NAME ...] [--runs N] [--profile]

Starts one SeaweedFS (``weed mini``, GOMEMLIMIT=1GiB) on loopback, generates the datasets in a temp
dir, then runs every case N times, alternating our tool and the peers (the order rotates each round).
Every upload run gets a fresh, unversioned bucket (warmed with one tiny object so the server's volume
allocation is not timed), is checked (object count and bytes) and the bucket is deleted afterwards,
so every tool meets the same server in the same state. The ``scale-*`` cases run ours alone on
fewer and more files (and smaller and larger archives) than the main cases, whose runs of ours are
the middle point of each scaling series; the series run last, the three points of each round by round
together (their order rotating), so a drift in the machine's speed meets every size alike. Prints medians,
the issue's targets and the scaling verdicts, writes ``benchmarks/results/latest.json`` and
``benchmarks/results/chart.png``; a full run (no ``--quick``, no ``--only``) also writes
``benchmarks/chart.png``, the chart docs/performance.md shows.

``--profile [CASE]`` instead runs our tool once on one case (default: plain-small) under py-spy and
prints where its CPU time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from benchlib import datasets as ds  # noqa: E402
from benchlib.estimate import RunPlan, estimate_minutes, history_rates  # noqa: E402
from benchlib.report import (  # noqa: E402
    FETCH_PEER,
    OURS_BOTO3,
    PIGZ,
    PIGZ_PIPE,
    PREFIX_PEER,
    SCALING,
    CaseSummary,
    ToolSummary,
    draw_chart,
    evaluate_targets,
    render_table,
    summarize,
    write_json,
)
from benchlib.runners import (  # noqa: E402
    CONN_ID,
    CpuClock,
    Outcome,
    S3Target,
    clean_environment,
    compile_bytecode,
    ensure_requirements,
    find_binary,
    run_child,
    run_command,
    run_shell,
    tool_version,
    wait_for_quiet,
)

from airflow_s3_publisher.manifest import MANIFEST_NAME  # noqa: E402
from tools.seaweed import Identity, SeaweedServer  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RESULTS = HERE / "results"
REQUIREMENTS = HERE / "requirements.txt"
COMMITTED_CHART = HERE / "chart.png"
#: Default time budget: a full run needs ~35 min (native engine for small files) to ~60 (boto3 alone), quiet.
MAX_MINUTES = 120.0
WARM_KEY = "_warm"
#: Our tools and the request engine each asks for (None: the package's default, ``auto``).
OURS_ENGINES: dict[str, str | None] = {"ours": None, OURS_BOTO3: "boto3"}
PLAIN_TOOLS = ("ours", "s5cmd", "rclone", "aws-cli", "boto3 x32")
SMALL_TOOLS = ("ours", OURS_BOTO3, "s5cmd", "rclone", "aws-cli", "boto3 x32")


@dataclass(frozen=True)
class Case:
    """One benchmark case: a dataset, what is done with it, and the tools compared."""

    name: str
    title: str  # "{data}" is replaced by the dataset's description
    dataset: str
    kind: str  # "plain", "compressed", "fetch" (a tar.gz, extracted) or "fetch-plain" (a prefix)
    unit: str  # "files/s" or "MB/s"
    tools: tuple[str, ...]
    informational: tuple[str, ...] = ()


CASES: tuple[Case, ...] = (
    Case("plain-small", "plain upload, {data}", "small", "plain", "files/s", SMALL_TOOLS, ("boto3 x32",)),
    Case(
        "fetch-plain-small",
        "plain fetch of that prefix, manifest verified ({data})",
        "small",
        "fetch-plain",
        "files/s",
        ("ours", OURS_BOTO3, PREFIX_PEER),
    ),
    Case("plain-big", "plain upload, {data}", "big", "plain", "MB/s", PLAIN_TOOLS, ("boto3 x32",)),
    Case("plain-medium", "plain upload, {data}", "medium", "plain", "MB/s", PLAIN_TOOLS, ("boto3 x32",)),
    Case(
        "compressed-small",
        "tar.gz publish, {data} (s5cmd: raw upload)",
        "small",
        "compressed",
        "files/s",
        ("ours", PIGZ_PIPE, "s5cmd", PIGZ),
        ("s5cmd", PIGZ),
    ),
    Case("compressed-csv", "tar.gz publish, {data}", "csv", "compressed", "MB/s", ("ours", PIGZ, PIGZ_PIPE)),
    Case("fetch-small", "fetch + extract the tar.gz of {data}", "small", "fetch", "files/s", ("ours", FETCH_PEER)),
    Case("fetch-csv", "fetch + extract the tar.gz of {data}", "csv", "fetch", "MB/s", ("ours", FETCH_PEER)),
    # Scaling series (issue #9): ours alone; the middle point of each is the main case above.
    Case("scale-publish-lo", "scaling: plain upload, {data}", "small-lo", "plain", "files/s", ("ours",)),
    Case("scale-publish-hi", "scaling: plain upload, {data}", "small-hi", "plain", "files/s", ("ours",)),
    Case(
        "scale-fetch-lo",
        "scaling: plain fetch, manifest verified, {data}",
        "small-lo",
        "fetch-plain",
        "files/s",
        ("ours",),
    ),
    Case(
        "scale-fetch-hi",
        "scaling: plain fetch, manifest verified, {data}",
        "small-hi",
        "fetch-plain",
        "files/s",
        ("ours",),
    ),
    Case("scale-csv-lo", "scaling: tar.gz publish, {data}", "csv-lo", "compressed", "MB/s", ("ours",)),
    Case("scale-csv-hi", "scaling: tar.gz publish, {data}", "csv-hi", "compressed", "MB/s", ("ours",)),
)
CASE_BY_NAME = {case.name: case for case in CASES}
#: What the children import inside the timed call (the native engine is loaded lazily): compiled first.
LAZY_PACKAGES = ("airflow_s3_publisher", "obstore")


@dataclass
class Bench:
    """Everything a run needs: the server, the environments of each tool, the datasets, the log dir."""

    server: SeaweedServer
    target: S3Target
    admin: S3Client
    workdir: Path
    logs: Path
    data: dict[str, ds.Dataset]
    binaries: dict[str, str | None]
    deadline: float
    quiet_wait: float = 0.0
    install: bool = True
    warm_up: bool = True
    cli_env: dict[str, str] = field(default_factory=dict)
    child_env: dict[str, str] = field(default_factory=dict)
    rclone_env: dict[str, str] = field(default_factory=dict)
    bucket_seq: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    server_rss: dict[str, int | None] = field(default_factory=dict)
    fetch_root: Path | None = None
    """Where fetches write (``--fetch-dir``); None: ``workdir / "fetched"``."""
    spent: list[Path] = field(default_factory=list)
    """Fetch destinations on a disk, deleted once their case is over: ext4 creates files several times
    slower right after many were deleted (it skips recently freed inodes), which would punish whichever
    tool runs next. On tmpfs they go at once."""

    @property
    def fetched(self) -> Path:
        return self.fetch_root or self.workdir / "fetched"

    @functools.cached_property
    def fetched_on_tmpfs(self) -> bool:
        return _on_tmpfs(self.fetched)

    def discard_later(self, path: Path) -> None:
        if self.fetched_on_tmpfs:
            shutil.rmtree(path, ignore_errors=True)
        else:
            self.spent.append(path)

    def discard_spent(self) -> None:
        for path in self.spent:
            shutil.rmtree(path, ignore_errors=True)
        self.spent.clear()
        os.sync()

    @property
    def clock(self) -> CpuClock:
        return CpuClock(self.server.pid)

    def new_bucket(self) -> str:
        self.bucket_seq += 1
        name = f"bench-{self.bucket_seq:04d}"
        self.admin.create_bucket(Bucket=name)
        self.admin.put_object(Bucket=name, Key=WARM_KEY, Body=b"w")  # the server allocates volumes here
        return name

    def drop_bucket(self, bucket: str) -> None:
        try:
            self.admin.delete_bucket(Bucket=bucket)  # SeaweedFS deletes non-empty buckets (and their volumes)
        except Exception as err:  # a leftover bucket only costs disk; report and go on
            print(f"  warning: could not delete bucket {bucket}: {err}", file=sys.stderr)

    def stored(self, bucket: str, prefix: str) -> tuple[int, int]:
        count = size = 0
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                count += 1
                size += int(item.get("Size", 0))
        return count, size


# ---------------------------------------------------------------------------------------------- setup
def find_binaries() -> dict[str, str | None]:
    found = {name: find_binary(name) for name in ("s5cmd", "rclone", "aws", "py-spy", "weed")}
    found["pigz"] = shutil.which("pigz")
    return found


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(mem / 2**30, 1),
        "cpu_model": model or platform.processor() or "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def tool_versions(binaries: dict[str, str | None]) -> dict[str, str]:
    import boto3

    versions = {"boto3": boto3.__version__}
    commands = {
        "s5cmd": ["version"],
        "rclone": ["version"],
        "aws": ["--version"],
        "pigz": ["--version"],
        "weed": ["version"],
    }
    for name, args in commands.items():
        binary = binaries.get(name)
        versions[name] = tool_version([binary, *args]) if binary else "missing"
    try:
        from importlib.metadata import version

        versions["airflow-s3-publisher"] = version("airflow-s3-publisher")
    except Exception:
        versions["airflow-s3-publisher"] = "not installed"
    return versions


def environments(bench: Bench) -> None:
    """The environment of each kind of tool: same server, same credentials, no stray configuration."""
    target = bench.target
    base = clean_environment(bench.workdir)
    aws_config = bench.workdir / "aws-config"
    aws_config.write_text(f"[default]\nregion = {target.region}\ns3 =\n    addressing_style = path\n")
    bench.cli_env = {
        **base,
        "AWS_ACCESS_KEY_ID": target.access_key,
        "AWS_SECRET_ACCESS_KEY": target.secret_key,
        "AWS_REGION": target.region,
        "AWS_DEFAULT_REGION": target.region,
        "AWS_CONFIG_FILE": str(aws_config),
        "S3_ENDPOINT_URL": target.endpoint,
    }
    rclone_config = bench.workdir / "rclone.conf"
    rclone_config.write_text("")
    bench.rclone_env = {
        **base,
        "RCLONE_CONFIG": str(rclone_config),
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": target.access_key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": target.secret_key,
        "RCLONE_CONFIG_BENCH_ENDPOINT": target.endpoint,
        "RCLONE_CONFIG_BENCH_REGION": target.region,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }
    home = bench.workdir / "airflow-home"
    (home / "dags").mkdir(parents=True, exist_ok=True)
    connection = {
        "conn_type": "aws",
        "login": target.access_key,
        "password": target.secret_key,
        "extra": {"endpoint_url": target.endpoint, "region_name": target.region},
    }
    bench.child_env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def timeout_for(data: ds.Dataset, child: bool = False) -> float:
    """Generous per-invocation limit: ~10 MB/s and 50 files/s at worst, plus start-up."""
    return 60 + data.size / 10e6 + data.files / 50 + (90 if child else 0)


# ---------------------------------------------------------------------------------------------- tools
def upload_tool(bench: Bench, tool: str, data: ds.Dataset, bucket: str, prefix: str, compress: bool) -> Outcome:
    """Run one upload-side tool on ``data`` into s3://bucket/prefix (a directory's files keep their paths)."""
    src = str(data.path)
    url = f"s3://{bucket}/{prefix}"
    log = bench.logs / f"{bucket}-{_slug(tool)}.log"
    timeout = timeout_for(data)
    b = bench.binaries
    if tool in OURS_ENGINES:
        job = {
            "kind": "publish",
            "source": src,
            "bucket": bucket,
            "compress": compress,
            "conn_id": CONN_ID,
            "key": prefix + "archive" if compress else prefix,
            "server_pid": bench.server.pid,
            **_engine_job(tool),
        }
        return run_child(job, env=bench.child_env, timeout=timeout_for(data, child=True), log=log)
    if tool == "boto3 x32":
        target = bench.target
        job = {
            "kind": "boto3",
            "source": src,
            "bucket": bucket,
            "key": prefix,
            "threads": 32,
            "endpoint": target.endpoint,
            "region": target.region,
            "access_key": target.access_key,
            "secret_key": target.secret_key,
            "server_pid": bench.server.pid,
        }
        return run_child(job, env=bench.child_env, timeout=timeout_for(data, child=True), log=log)
    if tool == "s5cmd":
        if not b["s5cmd"]:
            return Outcome.failed("s5cmd not installed")
        argv = [b["s5cmd"], "--endpoint-url", bench.target.endpoint, "--log", "error", "cp"]
        argv += [src, url + data.path.name] if data.is_file else [src + "/*", url]
        return run_command(argv, env=bench.cli_env, timeout=timeout, log=log, server=bench.clock)
    if tool == "rclone":
        if not b["rclone"]:
            return Outcome.failed("rclone not installed")
        argv = [
            b["rclone"],
            "copy",
            src,
            f"bench:{bucket}/{prefix}",
            "--transfers",
            "32",
            "--checkers",
            "32",
            "--s3-upload-concurrency",
            "8",
            "--s3-chunk-size",
            "16M",
            "--s3-no-check-bucket",
            "--no-check-dest",
            "--retries",
            "1",
            "--stats",
            "0",
        ]
        return run_command(argv, env=bench.rclone_env, timeout=timeout, log=log, server=bench.clock)
    if tool == "aws-cli":
        if not b["aws"]:
            return Outcome.failed("aws-cli not installed")
        argv = [b["aws"], "--endpoint-url", bench.target.endpoint, "s3", "cp", "--only-show-errors", "--no-progress"]
        argv += [src, url + data.path.name] if data.is_file else [src, url, "--recursive"]
        return run_command(argv, env=bench.cli_env, timeout=timeout, log=log, server=bench.clock)
    if tool in (PIGZ, PIGZ_PIPE):
        compressor = "pigz -p 2 -1" if b["pigz"] else "gzip -1"
        tar = f"tar -cf - -C {_q(str(data.path.parent))} {_q(data.path.name)} | {compressor}"
        if tool == PIGZ:
            return run_shell(f"{tar} > /dev/null", env=bench.cli_env, timeout=timeout, log=log, server=bench.clock)
        if not b["s5cmd"]:
            return Outcome.failed("s5cmd not installed")
        script = (
            f"{tar} | {_q(b['s5cmd'])} --endpoint-url {_q(bench.target.endpoint)} pipe {_q(url + 'archive.tar.gz')}"
        )
        return run_shell(script, env=bench.cli_env, timeout=timeout, log=log, server=bench.clock)
    return Outcome.failed(f"unknown tool {tool}")


def _engine_job(tool: str) -> dict[str, str]:
    """The child job's ``engine`` entry for one of our tools (none: the package's default)."""
    engine = OURS_ENGINES.get(tool)
    return {"engine": engine} if engine else {}


def gzip_size(bench: Bench, data: ds.Dataset, timeout: float) -> int | None:
    """Bytes of ``tar -c | pigz -p 2 -1`` of ``data`` (untimed; for the compression ratio)."""
    compressor = "pigz -p 2 -1" if bench.binaries["pigz"] else "gzip -1"
    script = f"set -o pipefail; tar -cf - -C {_q(str(data.path.parent))} {_q(data.path.name)} | {compressor} | wc -c"
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout, check=True)
        return int(done.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _version_number(text: str) -> str:
    match = re.search(r"\d+\.\d+(\.\d+)?", text)
    return match.group(0) if match else "?"


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _on_tmpfs(path: Path) -> bool:
    """Whether ``path`` (or the nearest existing folder above it) is on a tmpfs."""
    while not path.exists() and path != path.parent:
        path = path.parent
    best, fstype = "", ""
    with contextlib.suppress(OSError), open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and str(path.resolve()).startswith(fields[1]) and len(fields[1]) > len(best):
                best, fstype = fields[1], fields[2]
    return fstype == "tmpfs"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def tree_stats(root: Path, ignore: Path | None = None) -> tuple[int, int]:
    """Files below ``root`` and their bytes (``ignore``: one file not to count)."""
    files = [p for p in root.rglob("*") if p.is_file() and p != ignore]
    return len(files), sum(p.stat().st_size for p in files)


def check_tree(outcome: Outcome, root: Path, data: ds.Dataset, verb: str, ignore: Path | None = None) -> None:
    """A successful fetch must have written exactly ``data`` below ``root``; record what it wrote."""
    if not outcome.ok:
        return
    files, size = tree_stats(root, ignore=ignore)
    outcome.extra.update(files=files, bytes=size)
    if (files, size) != (data.files, data.size):
        outcome.ok = False
        outcome.error = f"{verb} {files} files / {size} bytes, expected {data.files} / {data.size}"


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class CaseRun:
    """One case being run: its dataset, what every round shares (a published prefix) and the records."""

    case: Case
    data: ds.Dataset
    results: dict[str, list[dict[str, Any]]]
    prefix: dict[str, Any] | None = None
    prefix_bucket: str = ""
    prefix_error: str = ""
    pigz_size: int | None = None


def start_case(bench: Bench, case: Case) -> CaseRun:
    data = bench.data[case.dataset]
    run = CaseRun(case, data, {tool: [] for tool in case.tools})
    if case.kind == "fetch-plain":  # one published prefix for every round: publishing it is the slow part
        run.prefix_bucket, run.prefix, run.prefix_error = prepare_prefix(bench, data)
    return run


def round_source(bench: Bench, run: CaseRun) -> tuple[str, dict[str, Any] | None, str]:
    """What a round of a fetch case fetches: (bucket to drop after the round, or "", the published
    result, the setup error). A tar.gz case gets a fresh archive each round; a prefix case shares one."""
    if run.case.kind == "fetch":
        return prepare_archive(bench, run.data)
    return "", run.prefix, run.prefix_error


def run_round(bench: Bench, run: CaseRun, rnd: int) -> None:
    """Round ``rnd`` of a case: each of its tools once, the order rotating with the round."""
    case, data = run.case, run.data
    order = list(case.tools[rnd % len(case.tools) :] + case.tools[: rnd % len(case.tools)])
    fetch_bucket, archive, setup_error = round_source(bench, run)
    for tool in order:
        waited = wait_for_quiet(bench.quiet_wait) if bench.quiet_wait > 0 else 0.0
        outcome = run_one(bench, case, tool, data, rnd, archive, setup_error)
        if not outcome.ok and refresh_tools(bench):  # a tool vanished under us: put it back, run again
            outcome = run_one(bench, case, tool, data, rnd, archive, setup_error)
        if tool == PIGZ and outcome.ok:
            if run.pigz_size is None:
                run.pigz_size = gzip_size(bench, data, timeout_for(data))
            if run.pigz_size:
                outcome.extra["compressed_bytes"] = run.pigz_size
                outcome.extra["compression_ratio"] = data.size / run.pigz_size
        record = {"case": case.name, "tool": tool, "round": rnd, "quiet_wait": waited, **asdict(outcome)}
        bench.records.append(record)
        run.results[tool].append(record)
        _print_run(case, tool, rnd, outcome, data)
        os.sync()  # nothing a tool wrote stays dirty for the next one to flush
    if fetch_bucket:
        bench.drop_bucket(fetch_bucket)


def finish_case(bench: Bench, run: CaseRun) -> dict[str, list[dict[str, Any]]]:
    if run.prefix_bucket:
        bench.drop_bucket(run.prefix_bucket)
    bench.server_rss[run.case.name] = bench.clock.rss()
    bench.discard_spent()
    return run.results


def run_group(bench: Bench, cases: Sequence[Case], runs: int) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every tool of each case, ``runs`` rounds, the tool order rotating each round. Several cases run
    round by round together, their order rotating too: the points of a scaling
    series meet the machine in the same state (a drift in its speed, from one case to the next, would
    otherwise read as a change of speed with the size)."""
    started = [start_case(bench, case) for case in cases]
    if bench.warm_up:
        for run in started:
            if not run.case.name.startswith("scale-"):  # they run last, on a server long warmed up
                warm_up(bench, run)
    for rnd in range(runs):
        for run in started[rnd % len(started) :] + started[: rnd % len(started)]:
            run_round(bench, run, rnd)
    return {run.case.name: finish_case(bench, run) for run in started}


def warm_up(bench: Bench, run: CaseRun) -> None:
    """One untimed run of the case's first tool. The first run of a case pays alone for what the server
    does once for a new kind of work (a 1 GiB upload right after start-up cost SeaweedFS 12.2 s of CPU,
    the same upload later 10.5 s); the first tool of round 0 is always ours."""
    case = run.case
    fetch_bucket, archive, setup_error = round_source(bench, run)
    outcome = run_one(bench, case, case.tools[0], run.data, -1, archive, setup_error)
    if fetch_bucket:
        bench.drop_bucket(fetch_bucket)
    took = f"{outcome.seconds:.2f} s" if outcome.ok and outcome.seconds is not None else outcome.error[:120]
    print(f"  {case.name:<17} warm-up ({case.tools[0]}, not counted): {took}", flush=True)
    os.sync()


def plan_groups(cases: Sequence[Case]) -> list[list[Case]]:
    """Each case of ``cases`` alone, in order, then each scaling series all of whose points are selected,
    as one group. The series come last: their 100,000 objects and 4 GiB archives leave SeaweedFS at its
    memory limit, which would weigh on every case after them."""
    names = {case.name for case in cases}
    by_name = {case.name: case for case in cases}
    series = [[by_name[name] for name in s.cases] for s in SCALING if set(s.cases) <= names]
    grouped = {case.name for group in series for case in group}
    return [[case] for case in cases if case.name not in grouped] + series


def run_one(
    bench: Bench, case: Case, tool: str, data: ds.Dataset, rnd: int, archive: dict[str, Any] | None, setup_error: str
) -> Outcome:
    if time.monotonic() > bench.deadline:
        return Outcome.failed("skipped: time budget (--max-minutes) exhausted")
    if case.kind in ("fetch", "fetch-plain"):
        if archive is None:
            return Outcome.failed(f"nothing to fetch: {setup_error}")
        if case.kind == "fetch-plain":
            return fetch_prefix_tool(bench, tool, data, archive, rnd)
        return fetch_tool(bench, tool, data, archive, rnd)
    return upload_run(bench, case, tool, data, rnd)


def upload_run(bench: Bench, case: Case, tool: str, data: ds.Dataset, rnd: int) -> Outcome:
    if tool == PIGZ:  # compresses to /dev/null: no bucket
        return upload_tool(bench, tool, data, "unused", "unused/", compress=True)
    try:
        bucket = bench.new_bucket()
    except Exception as err:
        return Outcome.failed(f"could not create a bucket: {err}")
    prefix = f"{case.name}/{_slug(tool)}/r{rnd}-{secrets.token_hex(3)}/"
    try:
        outcome = upload_tool(bench, tool, data, bucket, prefix, compress=case.kind == "compressed")
        if outcome.ok:
            count, size = bench.stored(bucket, prefix)
            outcome.extra.update(objects=count, stored_bytes=size)
            if case.kind == "compressed" and tool in ("ours", PIGZ_PIPE):
                if count != 1:
                    outcome.ok, outcome.error = False, f"expected 1 archive object, found {count}"
                else:
                    outcome.extra["compression_ratio"] = data.size / size if size else None
            elif (count, size) != (data.files, data.size):
                outcome.ok = False
                outcome.error = f"stored {count} objects / {size} bytes, expected {data.files} / {data.size}"
    finally:
        bench.drop_bucket(bucket)
    return outcome


def prepare_archive(bench: Bench, data: ds.Dataset) -> tuple[str, dict[str, Any] | None, str]:
    """A fresh bucket holding the tar.gz of ``data``: published by ours (or by tar|pigz|s5cmd if ours fails)."""
    bucket = bench.new_bucket()
    prefix = f"fetch/{secrets.token_hex(3)}/"
    job = {
        "kind": "publish",
        "source": str(data.path),
        "bucket": bucket,
        "compress": True,
        "conn_id": CONN_ID,
        "key": prefix + "archive",
        "server_pid": bench.server.pid,
    }
    log = bench.logs / f"{bucket}-setup.log"
    ours = run_child(job, env=bench.child_env, timeout=timeout_for(data, child=True), log=log)
    if ours.ok and ours.extra.get("result"):
        result = dict(ours.extra["result"])
        params = result.get("Params", result)
        return bucket, {"bucket": params["Bucket"], "key": params["Key"], "result": result}, ""
    peer = upload_tool(bench, PIGZ_PIPE, data, bucket, prefix, compress=True)
    if not peer.ok:
        return bucket, None, f"ours: {ours.error}; tar|pigz|s5cmd: {peer.error}"
    print(f"  (fetch setup: ours could not publish ({ours.error[:100]}); archive made with tar|pigz|s5cmd)")
    key = prefix + "archive.tar.gz"
    return bucket, {"bucket": bucket, "key": key, "result": {"Bucket": bucket, "Key": key}}, ""


def prepare_prefix(bench: Bench, data: ds.Dataset) -> tuple[str, dict[str, Any] | None, str]:
    """A fresh bucket holding ``data`` published plain by ours with a manifest (untimed setup).

    Returns the bucket, ``{"bucket", "key", "result"}`` (``result``: the PublishedResult dict, whose
    ChecksumSHA256 pins the manifest) or None, and why not.
    """
    if time.monotonic() > bench.deadline:
        return "", None, "skipped: time budget (--max-minutes) exhausted"
    try:
        bucket = bench.new_bucket()
    except Exception as err:
        return "", None, f"could not create a bucket: {err}"
    prefix = f"fetch/{secrets.token_hex(3)}/"
    job = {
        "kind": "publish",
        "source": str(data.path),
        "bucket": bucket,
        "compress": False,
        "manifest": True,
        "conn_id": CONN_ID,
        "key": prefix,
        "server_pid": bench.server.pid,
    }
    ours = run_child(
        job, env=bench.child_env, timeout=timeout_for(data, child=True), log=bench.logs / f"{bucket}-setup.log"
    )
    if not ours.ok or not ours.extra.get("result"):
        return bucket, None, f"setup: ours could not publish the prefix with a manifest: {ours.error}"
    count, _size = bench.stored(bucket, prefix)
    if count != data.files + 1:
        return bucket, None, f"setup: the prefix holds {count} objects, expected {data.files} files + the manifest"
    engines = ",".join(ours.extra.get("engines") or []) or "-"
    print(
        f"  (setup: ours published {data.files:,} files + manifest in {ours.seconds or 0:.2f} s, engine {engines})",
        flush=True,
    )
    return bucket, {"bucket": bucket, "key": prefix, "result": ours.extra["result"]}, ""


def fetch_prefix_tool(bench: Bench, tool: str, data: ds.Dataset, published: dict[str, Any], rnd: int) -> Outcome:
    """Download every file of a published prefix: ours verifies each against the manifest; the peer is
    ``s5cmd cp 's3://bucket/prefix/*' dest/`` (which also downloads the manifest object: not counted)."""
    dest = bench.fetched / f"{_slug(tool)}-{rnd}"
    shutil.rmtree(dest, ignore_errors=True)
    log = bench.logs / f"fetch-prefix-{data.name}-{_slug(tool)}-{rnd}.log"
    try:
        if tool in OURS_ENGINES:
            job = {
                "kind": "fetch",
                "result": published["result"],
                "destination": str(dest),
                "conn_id": CONN_ID,
                "server_pid": bench.server.pid,
                **_engine_job(tool),
            }
            outcome = run_child(job, env=bench.child_env, timeout=timeout_for(data, child=True), log=log)
        elif not bench.binaries["s5cmd"]:
            return Outcome.failed("s5cmd not installed")
        else:
            dest.mkdir(parents=True)
            url = f"s3://{published['bucket']}/{published['key']}*"
            argv = [bench.binaries["s5cmd"], "--endpoint-url", bench.target.endpoint, "--log", "error", "cp"]
            argv += [url, str(dest) + "/"]
            outcome = run_command(argv, env=bench.cli_env, timeout=timeout_for(data), log=log, server=bench.clock)
        check_tree(outcome, dest, data, "fetched", ignore=dest / MANIFEST_NAME)
        return outcome
    finally:
        bench.discard_later(dest)


def fetch_tool(bench: Bench, tool: str, data: ds.Dataset, archive: dict[str, Any], rnd: int) -> Outcome:
    dest = bench.fetched / f"{_slug(tool)}-{rnd}"
    shutil.rmtree(dest, ignore_errors=True)
    log = bench.logs / f"fetch-{data.name}-{_slug(tool)}-{rnd}.log"
    bucket, key = archive["bucket"], archive["key"]
    try:
        if tool == "ours":
            job = {
                "kind": "fetch",
                "result": archive["result"],
                "destination": str(dest),
                "conn_id": CONN_ID,
                "server_pid": bench.server.pid,
            }
            outcome = run_child(job, env=bench.child_env, timeout=timeout_for(data, child=True), log=log)
            out = dest
        elif not bench.binaries["s5cmd"]:
            return Outcome.failed("s5cmd not installed")
        else:
            out = dest / "out"
            tarball = dest / "archive.tar.gz"
            script = (
                f"mkdir -p {_q(str(out))}; {_q(bench.binaries['s5cmd'] or '')} --endpoint-url "
                f"{_q(bench.target.endpoint)} --log error cp s3://{bucket}/{key} {_q(str(tarball))}; "
                f"tar -xzf {_q(str(tarball))} -C {_q(str(out))}"
            )
            outcome = run_shell(script, env=bench.cli_env, timeout=timeout_for(data), log=log, server=bench.clock)
        check_tree(outcome, out, data, "extracted")
        return outcome
    finally:
        bench.discard_later(dest)


def _print_run(case: Case, tool: str, rnd: int, outcome: Outcome, data: ds.Dataset) -> None:
    if not outcome.ok or outcome.seconds is None:
        print(f"  {case.name:<17} r{rnd} {tool:<24} FAILED: {outcome.error[:200]}", flush=True)
        return
    rate = data.files / outcome.seconds if case.unit == "files/s" else data.size / outcome.seconds / 1e6
    rss = f"  peak RSS {outcome.rss_peak / 2**20:.0f} MiB" if outcome.rss_peak else ""
    engines = outcome.extra.get("engines")
    engine = f"  engine {','.join(engines)}" if engines else ""
    print(
        f"  {case.name:<17} r{rnd} {tool:<24} {outcome.seconds:8.2f} s {rate:10,.1f} {case.unit}{rss}{engine}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------- profile
def profile_case(bench: Bench, case: Case, top: int = 25) -> None:
    """Our tool on ``case``, once, under py-spy: where the CPU time of the call goes."""
    spy = bench.binaries.get("py-spy")
    if not spy:
        print("py-spy is not installed (pip install -r benchmarks/requirements.txt)")
        return
    data = bench.data[case.dataset]
    if case.kind == "fetch":
        bucket, archive, error = prepare_archive(bench, data)
    elif case.kind == "fetch-plain":
        bucket, archive, error = prepare_prefix(bench, data)
    else:
        bucket, archive, error = bench.new_bucket(), None, ""
    raw = RESULTS / f"profile-{case.name}.txt"
    job: dict[str, Any] = {"conn_id": CONN_ID, "server_pid": bench.server.pid}
    if case.kind in ("fetch", "fetch-plain"):
        if archive is None:
            print(f"profile run failed: nothing to fetch: {error}")
            if bucket:
                bench.drop_bucket(bucket)
            return
        job.update(kind="fetch", result=archive["result"], destination=str(bench.fetched / "profile"))
    else:
        compress = case.kind == "compressed"
        job.update(kind="publish", source=str(data.path), bucket=bucket, compress=compress)
        job["key"] = "profile/archive" if compress else "profile/"
    # --gil: sample only the thread holding the GIL, i.e. where the client's Python CPU time goes (a thread
    # waiting on a socket does not hold it); --nonblocking: do not pause the process to sample it.
    wrapper = [spy, "record", "--gil", "--rate", "100", "--format", "raw", "--output", str(raw), "--"]
    timeout = timeout_for(data, child=True) + 60
    outcome = run_child(job, env=bench.child_env, timeout=timeout, log=bench.logs / "profile.log", wrapper=wrapper)
    bench.drop_bucket(bucket)
    shutil.rmtree(bench.fetched / "profile", ignore_errors=True)
    if not outcome.ok or not raw.is_file():
        print(f"profile run failed: {outcome.error}")
        return
    print(
        f"ours, {case.name} ({data.description}): {outcome.seconds:.2f} s wall, client CPU "
        f"{outcome.client_cpu or 0:.2f} s, server CPU {outcome.server_cpu or 0:.2f} s, peak RSS "
        f"{(outcome.rss_peak or 0) / 2**20:.0f} MiB (py-spy --gil at 100 Hz: the share of the GIL holder's time; "
        f"raw stacks in {raw.relative_to(REPO)})"
    )
    print_profile(raw.read_text(), top)


def print_profile(collapsed: str, top: int) -> None:
    """Self and inclusive sample counts per function, from py-spy's collapsed stacks, during the call."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or "airflow_s3_publisher/" not in stack or "_find_and_load" in stack:
            continue  # only the publish call and its worker threads, not the imports
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        print("no samples inside airflow_s3_publisher")
        return
    print(f"\nself samples by package ({total} GIL-holding samples = {total / 100:.1f} s):")
    for package, count in packages.most_common(12):
        print(f"  {100 * count / total:5.1f}%  {package}")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"\ntop {top} functions by {title} samples ({total} GIL-holding samples = {total / 100:.1f} s):")
        for frame, count in counter.most_common(top):
            print(f"  {100 * count / total:5.1f}%  {frame}")


def _package(frame: str) -> str:
    """'func (botocore/hooks.py)' -> 'botocore'; a standard-library module keeps its own name."""
    path = frame.rpartition(" (")[2].rstrip(")")
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def _frame(text: str) -> str:
    """'func (path/to/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)'."""
    name, _, where = text.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


# ---------------------------------------------------------------------------------------------- main
def select_cases(only: Sequence[str] | None) -> list[Case]:
    """The cases ``--only`` names (by name or prefix; all without it), in the order of :data:`CASES`.

    A scaling case needs its series' middle point, a main case's run of ours: when that main case is
    not selected, it is added with ours alone (so ``--only scale`` runs every scaling point once).
    """
    if not only:
        return list(CASES)
    wanted = [name.strip() for item in only for name in item.split(",") if name.strip()]
    chosen = [case for case in CASES if any(case.name == w or case.name.startswith(w) for w in wanted)]
    if not chosen:
        known = ", ".join(case.name for case in CASES)
        raise SystemExit(f"--only {', '.join(wanted)} matches no case; cases: {known}")
    names = {case.name for case in chosen}
    for series in SCALING:
        if series.middle not in names and any(name in names for name in series.cases if name != series.middle):
            base = CASE_BY_NAME[series.middle]
            title = base.title + " (ours only)"
            chosen.append(replace(base, tools=("ours",), informational=(), title=title))
            names.add(base.name)
    order = {case.name: index for index, case in enumerate(CASES)}
    return sorted(chosen, key=lambda case: order[case.name])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round, smaller datasets (2,000 files, 256 MiB; scaling 500 / 2,000 / 10,000 files, 64 / 256 / 512 MiB)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these cases (name or prefix, comma-separated or repeated): "
        + ", ".join(case.name for case in CASES),
    )
    parser.add_argument("--runs", type=int, default=None, help="rounds per case (default 3, 1 with --quick)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where datasets and server data go (kept, datasets reused); default: a temp dir",
    )
    parser.add_argument(
        "--fetch-dir",
        type=Path,
        default=Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None,
        help="where fetches extract and download to, for ours and the peers alike (default /dev/shm where it "
        "exists: a tmpfs keeps the virtual disk's state after mass deletions out of the figures; on a disk "
        "the destinations are deleted after their case)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=MAX_MINUTES,
        help=f"skip the remaining runs after this long (default {MAX_MINUTES:.0f}; a full run takes ~35-60)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for other processes to use < 0.3 cores (default 10; 0: off)",
    )
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="time every run, the first of each case too (default: one untimed run of ours first, see run_group)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not (re)install benchmarks/requirements.txt into the venv when a tool is missing",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="plain-small",
        metavar="CASE",
        help="instead of benchmarking, run ours once on CASE (default plain-small) under py-spy",
    )
    parser.add_argument("--redraw", type=Path, metavar="JSON", help="only draw the charts again from a latest.json")
    args = parser.parse_args(argv)
    if args.redraw:
        return redraw(args.redraw)
    runs = args.runs or (1 if args.quick else 3)
    sizes = ds.QUICK if args.quick else ds.FULL
    cases = select_cases([args.profile] if args.profile else args.only)
    started = datetime.now(UTC)
    began = time.monotonic()

    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="s3pub-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / f"run-{started:%Y%m%dT%H%M%S}"
    fetch_root = args.fetch_dir.resolve() / f"s3pub-bench-{started:%Y%m%dT%H%M%S}" if args.fetch_dir else None
    if not args.no_install:
        note = ensure_requirements(REQUIREMENTS)
        if note:
            print(note, flush=True)
    uncompiled = compile_bytecode(LAZY_PACKAGES)
    if uncompiled:
        print(f"warning: could not byte-compile {', '.join(uncompiled)}; their children compile them", flush=True)
    binaries = find_binaries()
    if not binaries["pigz"]:
        print("warning: pigz not found (apt-get install pigz); the compression peer falls back to gzip -1")
    try:
        t0 = time.monotonic()
        needed = sorted({case.dataset for case in cases})
        data_root = workdir / "datasets" / ("quick" if args.quick else "full")
        if not args.profile:
            print_estimate(cases, sizes, data_root, runs, args)
        data = ds.make_datasets(data_root, sizes, needed)
        print(
            f"datasets ready in {time.monotonic() - t0:.1f} s under {data_root}: "
            + "; ".join(f"{d.name}: {d.description}" for d in data.values()),
            flush=True,
        )
        admin = Identity(
            "admin",
            "BENCH" + secrets.token_hex(8).upper(),
            secrets.token_urlsafe(30),
            ("Admin", "Read", "List", "Tagging", "Write"),
        )
        server = SeaweedServer(run_dir / "seaweed", [admin], memory_limit="1GiB")
        server.start()
        try:
            bench = Bench(
                server=server,
                target=S3Target(server.endpoint, admin.access_key, admin.secret_key),
                admin=server.client(),
                workdir=run_dir,
                logs=run_dir / "logs",
                data=data,
                binaries=binaries,
                deadline=began + args.max_minutes * 60,
                quiet_wait=args.quiet_wait,
                install=not args.no_install,
                warm_up=not args.no_warm_up,
                fetch_root=fetch_root,
            )
            environments(bench)
            print(
                f"SeaweedFS at {server.endpoint} (pid {server.pid}), started in {server.startup_seconds:.1f} s; "
                f"logs in {bench.logs}",
                flush=True,
            )
            if args.profile:
                profile_case(bench, cases[0])
                return 0
            return run_all(bench, cases, runs, args, started, began)
        finally:
            server.stop()
    finally:
        if fetch_root is not None:
            shutil.rmtree(fetch_root, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def print_estimate(
    cases: Sequence[Case], sizes: ds.Sizes, data_root: Path, runs: int, args: argparse.Namespace
) -> None:
    """Print how long this run should take (and warn when ``--max-minutes`` will cut it short)."""
    rates, source = history_rates(RESULTS / "latest.json")
    minutes = planned_minutes(cases, sizes, runs, rates, data_root, args.quiet_wait)
    print(
        f"estimated duration: ~{minutes:.0f} min ({len(cases)} cases x {runs} round(s); rates {source}); "
        f"time budget --max-minutes {args.max_minutes:.0f}",
        flush=True,
    )
    if minutes > args.max_minutes:
        print(f"warning: the estimate exceeds --max-minutes {args.max_minutes:.0f}: the last runs may be skipped")


def planned_minutes(
    cases: Sequence[Case],
    sizes: ds.Sizes,
    runs: int,
    rates: dict[tuple[str, str], float],
    data_root: Path,
    quiet_wait: float,
) -> float:
    """Estimated minutes for ``runs`` rounds of ``cases`` at ``sizes``, making the datasets not in ``data_root``."""
    plans = [RunPlan(c.name, c.kind, c.unit, c.tools, *ds.expected(c.dataset, sizes)) for c in cases]
    needed = sorted({case.dataset for case in cases})
    generate = [ds.expected(name, sizes) for name in needed if not (data_root / name / ".done").is_file()]
    return estimate_minutes(plans, runs, generate, rates, quiet_wait=quiet_wait)


def refresh_tools(bench: Bench) -> bool:
    """Put back benchmark tools that a concurrent ``uv pip sync`` of the project venv removed.

    Returns whether something was missing (and so reinstalled).
    """
    if not bench.install:
        return False
    note = ensure_requirements(REQUIREMENTS)
    if note:
        print(f"  ({note})", flush=True)
        bench.binaries = find_binaries()
    return bool(note)


def chart_footer(machine: dict[str, Any], versions: dict[str, str], started: datetime, mode: str, runs: int) -> str:
    return (
        f"{machine['cores']} cores, {machine['ram_gib']} GiB RAM, {machine['cpu_model']}; client and "
        f"SeaweedFS {_version_number(versions.get('weed', ''))} share the cores. "
        f"{started:%Y-%m-%d}, {mode} run, median of {runs}. Red: ours; light red: ours on the boto3 engine; "
        "grey: for information, not a target's peer."
    )


def redraw(path: Path) -> int:
    """Draw the charts again from a saved ``latest.json`` (the committed one only for a full, complete run).

    The targets are evaluated again from the saved medians, with the current definitions.
    """
    payload = json.loads(path.read_text())
    summaries = [
        CaseSummary(**{**case, "tools": [ToolSummary(**tool) for tool in case["tools"]]})
        for case in payload["summaries"].values()
    ]
    targets = evaluate_targets({summary.name: summary for summary in summaries})
    started = datetime.fromisoformat(payload["started"])
    footer = chart_footer(payload["machine"], payload["versions"], started, payload["mode"], payload["runs"])
    charts = [RESULTS / "chart.png"]
    if payload["mode"] == "full" and {case.name for case in CASES} <= set(payload["summaries"]):
        charts.append(COMMITTED_CHART)
    draw_chart(summaries, targets, footer, charts)
    print("wrote " + ", ".join(str(p.relative_to(REPO)) for p in charts))
    return 0


def run_all(
    bench: Bench, cases: Sequence[Case], runs: int, args: argparse.Namespace, started: datetime, began: float
) -> int:
    summaries: dict[str, CaseSummary] = {}
    for group in plan_groups(cases):
        refresh_tools(bench)
        titles = {case.name: case.title.format(data=bench.data[case.dataset].description) for case in group}
        for case in group:
            print(f"\n== {case.name}: {titles[case.name]} ({runs} round{'s' if runs > 1 else ''})", flush=True)
        if len(group) > 1:
            print(f"   ({', '.join(titles)} run round by round together)", flush=True)
        grouped = run_group(bench, group, runs)
        for case in group:
            name, results, data = case.name, grouped[case.name], bench.data[case.dataset]
            amount = data.files if case.unit == "files/s" else data.size
            summaries[name] = summarize(name, titles[name], case.unit, amount, results, set(case.informational))
    summaries = {case.name: summaries[case.name] for case in cases}
    refresh_tools(bench)
    targets = evaluate_targets(summaries)
    table = render_table(list(summaries.values()), targets)
    minutes = (time.monotonic() - began) / 60
    machine = machine_info()
    versions = tool_versions(bench.binaries)
    mode = "quick" if args.quick else "full"
    print(f"\nResults ({mode}, {runs} round(s), medians; {minutes:.1f} min)\n")
    print(table)
    print(
        "\nSeaweedFS RSS after each case: "
        + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in bench.server_rss.items() if v)
    )
    rates = {(s.name, t.tool): t.throughput for s in summaries.values() for t in s.tools if t.throughput}
    full_root = bench.workdir.parent / "datasets" / "full"
    full = planned_minutes(CASES, ds.FULL, 3, rates, full_root, args.quiet_wait)
    print(
        f"A full run (every case, 3 rounds, full datasets) at this run's rates (nominal where missing): ~{full:.0f} min"
    )
    footer = chart_footer(machine, versions, started, mode, runs)
    payload = {
        "started": started.isoformat(),
        "minutes": round(minutes, 2),
        "mode": mode,
        "runs": runs,
        "machine": machine,
        "versions": versions,
        "datasets": {name: {**asdict(d), "path": str(d.path)} for name, d in bench.data.items()},
        "summaries": {name: asdict(s) for name, s in summaries.items()},
        "targets": [{**asdict(t), "verdict": t.verdict} for t in targets],
        "server_rss_after_case": bench.server_rss,
        "records": bench.records,
        "table": table,
    }
    write_json(RESULTS / "latest.json", payload)
    charts = [RESULTS / "chart.png"]
    if not args.quick and not args.only:
        charts.append(COMMITTED_CHART)
    try:
        draw_chart(list(summaries.values()), targets, footer, charts)
    except Exception as err:  # the numbers are what matters; a chart problem must not lose them
        print(f"warning: chart not drawn: {err}", file=sys.stderr)
        charts = []
    written = ", ".join(str(p.relative_to(REPO)) for p in [RESULTS / "latest.json", *charts])
    print(f"\nwrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
