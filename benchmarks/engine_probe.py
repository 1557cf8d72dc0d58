"""Measure ways of moving many small objects natively against s5cmd, in one run on one SeaweedFS (issue 9).

Starts one SeaweedFS (``weed mini``, GOMEMLIMIT=1GiB, loopback), generates ``--files`` files of
``--size`` bytes (the benchmark's ``small`` dataset layout: 100 subdirectories), then runs each variant
``--rounds`` times, alternating variants and rotating their order every round, and prints medians:

* uploads (each into a fresh bucket, warmed with one tiny object; the stored count and bytes are checked):
  ``s5cmd`` (``cp 'dir/*' s3://bucket/prefix/``, its defaults) and obstore variants:
  ``async-N`` (``put_async`` under a semaphore of N, files read inside the event loop),
  ``async-reader-N`` (the same, files read and hashed by a reader thread),
  ``threads-N`` (the synchronous ``put`` from N threads, each reading its own files), each with the
  SHA-256 checksum header (``+sum``) or without, and a signed (``signed``) or unsigned payload;
  ``engine[-N]`` (airflow_s3_publisher's NativeEngine.put_many with N workers);
  ``publish`` (``publish(..., manifest=True)`` from an Airflow connection, default engine: native
  where installed) and ``publish-boto3`` (the same with ``TransferOptions(engine="boto3")``);
* downloads of one prefix (every file hashed while written, as a manifest-checked fetch does; count
  and bytes checked): ``s5cmd-get`` (``cp 's3://bucket/prefix/*' dir/``), ``get-threads-N`` (sync
  ``get`` + ``bytes()`` from N threads), ``get-async-N``, ``engine-get[-N]``; ``fetch`` (``fetch()`` of
  the prefix, every file checked against its manifest, default engine) and ``fetch-boto3``. The
  prefix holds a manifest for these.

Python variants run in a fresh child interpreter each (the clock covers store creation and the work;
imports are done before it starts), s5cmd as a whole process (start-up included). Each line of output
carries the machine's 1-minute load average at the start of the run: the machine has two cores shared
by the client, the server and anything else, so a high load means a disturbed figure.

Usage::

    .venv/bin/python benchmarks/engine_probe.py --rounds 3
    .venv/bin/python benchmarks/engine_probe.py --variants s5cmd,async-64+sum,engine --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchlib import datasets as ds  # noqa: E402
from benchlib.runners import CpuClock, clean_environment, find_binary, run_command  # noqa: E402

from airflow_s3_publisher.manifest import MANIFEST_NAME  # noqa: E402

REGION = "us-east-1"
PREFIX = "probe/"
CONN_ID = "probe"
DEFAULT_VARIANTS = (
    "s5cmd",
    "async-64+sum",
    "async-64+sum+unsigned",
    "async-reader-64+sum+unsigned",
    "threads-32+sum+unsigned",
    "threads-64+sum+unsigned",
)
DEFAULT_GET_VARIANTS = ("s5cmd-get", "get-threads-32", "get-async-64")


# ------------------------------------------------------------------------------------------- child side


def _files(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*") if p.is_file())


def _store(job: dict[str, Any], *, checksum: bool, unsigned: bool, bucket: str) -> Any:
    from obstore.store import S3Store

    access, secret = job["access_key"], job["secret_key"]

    def credentials() -> dict[str, Any]:
        return {"access_key_id": access, "secret_access_key": secret, "token": None, "expires_at": None}

    config: dict[str, Any] = {"unsigned_payload": unsigned}
    if checksum:
        config["checksum_algorithm"] = "SHA256"
    return S3Store(
        bucket,
        endpoint=job["endpoint"],
        region=REGION,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "pool_max_idle_per_host": "256"},
        retry_config={"max_retries": 0},
        credential_provider=credentials,
        **config,
    )


def _parse(variant: str) -> tuple[str, int, set[str]]:
    """``async-reader-64+sum+unsigned`` -> ("async-reader", 64, {"sum", "unsigned"})."""
    head, *flags = variant.split("+")
    kind, _, number = head.rpartition("-")
    if not number.isdigit():
        return head, 0, set(flags)
    return kind, int(number), set(flags)


def _attributes(path: Path, digest: bytes) -> dict[str, str]:
    return {"Content-Type": "application/octet-stream", "sha256": digest.hex()}


def _upload(job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    import obstore

    kind, width, flags = _parse(job["variant"])
    source = Path(job["source"])
    files = _files(source)
    bucket = job["bucket"]

    def read(path: Path) -> tuple[str, bytes, bytes]:
        data = path.read_bytes()
        return PREFIX + path.relative_to(source).as_posix(), data, hashlib.sha256(data).digest()

    if kind in ("engine", "engine-put"):
        return _engine_upload(job, files, source)

    def call() -> dict[str, Any]:
        store = _store(job, checksum="sum" in flags, unsigned="unsigned" in flags, bucket=bucket)
        if kind == "threads":

            def one(path: Path) -> None:
                key, data, digest = read(path)
                obstore.put(store, key, data, attributes=_attributes(path, digest), use_multipart=False)

            with ThreadPoolExecutor(width) as pool:
                for future in [pool.submit(one, p) for p in files]:
                    future.result()
            return {}

        async def main() -> None:
            gate = asyncio.Semaphore(width)

            async def put(key: str, data: bytes, digest: bytes, path: Path) -> None:
                try:
                    await obstore.put_async(store, key, data, attributes=_attributes(path, digest), use_multipart=False)
                finally:
                    gate.release()

            tasks = []
            if kind == "async":
                for path in files:
                    await gate.acquire()
                    key, data, digest = read(path)
                    tasks.append(asyncio.create_task(put(key, data, digest, path)))
            elif kind == "async-reader":
                loop = asyncio.get_running_loop()
                queue: asyncio.Queue[tuple[str, bytes, bytes, Path] | None] = asyncio.Queue(maxsize=width)

                def reader() -> None:
                    for path in files:
                        item = (*read(path), path)
                        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
                    asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

                thread = threading.Thread(target=reader, daemon=True)
                thread.start()
                while (item := await queue.get()) is not None:
                    await gate.acquire()
                    tasks.append(asyncio.create_task(put(*item)))
                thread.join()
            else:
                raise SystemExit(f"unknown variant {job['variant']!r}")
            await asyncio.gather(*tasks)

        asyncio.run(main())
        return {}

    return call


def _engine_session(job: dict[str, Any]) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id=job["access_key"], aws_secret_access_key=job["secret_key"], region_name=REGION
    )


def _engine(job: dict[str, Any]) -> Any:
    from botocore.config import Config

    from airflow_s3_publisher.options import TransferOptions
    from airflow_s3_publisher.s3.client import S3Client
    from airflow_s3_publisher.s3.native import NativeEngine

    _kind, width, _flags = _parse(job["variant"])
    session = _engine_session(job)
    raw = session.client("s3", endpoint_url=job["endpoint"], config=Config(s3={"addressing_style": "path"}))
    client = S3Client(raw, job["endpoint"], REGION, TransferOptions(), session, "path", None)
    return NativeEngine.create(client, concurrency=width or None)


#: What a publish adds to every object's metadata besides its sha256 (``+meta`` variants send it too).
RUN_METADATA = {"airflow-dag-id": "probe", "airflow-run-id": "manual", "airflow-task-id": "publish"}


def _engine_upload(job: dict[str, Any], files: list[Path], source: Path) -> Callable[[], dict[str, Any]]:
    from airflow_s3_publisher.s3.objects import PutJob, PutRequest

    extra = RUN_METADATA if "meta" in _parse(job["variant"])[2] else {}

    def make(path: Path) -> Any:
        def load() -> Any:
            data = path.read_bytes()
            digest = hashlib.sha256(data).digest()
            return PutRequest(
                key=PREFIX + path.relative_to(source).as_posix(),
                body=data,
                sha256=digest,
                args={"ContentType": "application/octet-stream", "Metadata": {**extra, "sha256": digest.hex()}},
            )

        return PutJob(path.stat().st_size, load)

    def call() -> dict[str, Any]:
        engine = _engine(job)
        try:
            results = engine.put_many(job["bucket"], (make(p) for p in files), lambda result: None)
        finally:
            engine.close()
        return {"stored": len(results)}

    return call


def _publish(job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """publish(compress=False, manifest=True) as a user calls it; ``publish-boto3`` forces the boto3 engine."""
    import airflow.providers.amazon.aws.hooks.s3  # noqa: F401  (an Airflow worker has it loaded)

    from airflow_s3_publisher import publish
    from airflow_s3_publisher.options import TransferOptions

    transfer = TransferOptions(engine="boto3" if job["variant"].endswith("-boto3") else "auto")

    def call() -> dict[str, Any]:
        result = publish(
            job["source"],
            bucket=job["bucket"],
            key=PREFIX,
            compress=False,
            manifest=True,
            aws_conn_id=job["conn_id"],
            transfer=transfer,
        )
        return {"result": result.to_dict()}

    return call


def _fetch(job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """fetch() of the prefix, every file checked against its manifest; ``fetch-boto3`` forces boto3."""
    import airflow.providers.amazon.aws.hooks.s3  # noqa: F401

    from airflow_s3_publisher import fetch
    from airflow_s3_publisher.options import TransferOptions

    transfer = TransferOptions(engine="boto3" if job["variant"].endswith("-boto3") else "auto")

    def call() -> dict[str, Any]:
        fetch(job["result"], job["destination"], aws_conn_id=job["conn_id"], transfer=transfer)
        return {}

    return call


def _download(job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    import obstore

    kind, width, _flags = _parse(job["variant"])
    keys: list[str] = job["keys"]
    dest = Path(job["destination"])

    def target(key: str) -> Path:
        return dest / key[len(PREFIX) :]

    if kind == "engine-get":
        from airflow_s3_publisher.s3.objects import GetRequest

        def call_engine() -> dict[str, Any]:
            engine = _engine(job)
            for folder in {target(k).parent for k in keys}:
                folder.mkdir(parents=True, exist_ok=True)
            try:
                got: list[Any] = []
                engine.get_many(job["bucket"], [GetRequest(k, target(k)) for k in keys], lambda n: None, got.append)
            finally:
                engine.close()
            return {"fetched": len(got)}

        return call_engine

    def call() -> dict[str, Any]:
        store = _store(job, checksum=False, unsigned=True, bucket=job["bucket"])
        for folder in {target(k).parent for k in keys}:
            folder.mkdir(parents=True, exist_ok=True)

        def write(key: str, data: bytes) -> None:
            hashlib.sha256(data).digest()
            with open(target(key), "wb") as out:
                out.write(data)

        if kind == "get-threads":

            def one(key: str) -> None:
                write(key, bytes(obstore.get(store, key).bytes()))

            with ThreadPoolExecutor(width) as pool:
                for future in [pool.submit(one, k) for k in keys]:
                    future.result()
            return {}

        async def main() -> None:
            gate = asyncio.Semaphore(width)

            async def one(key: str) -> None:
                try:
                    result = await obstore.get_async(store, key)
                    write(key, bytes(await result.bytes_async()))
                finally:
                    gate.release()

            tasks = []
            for key in keys:
                await gate.acquire()
                tasks.append(asyncio.create_task(one(key)))
            await asyncio.gather(*tasks)

        if kind != "get-async":
            raise SystemExit(f"unknown variant {job['variant']!r}")
        asyncio.run(main())
        return {}

    return call


def child_main(job_file: str, report: str) -> int:
    """Run the job in ``job_file`` in this (fresh) interpreter; write {"seconds", "cpu", ...} to ``report``."""
    import resource

    job = json.loads(Path(job_file).read_text())
    import boto3  # noqa: F401  (imported before the clock, as in an Airflow worker)
    import obstore  # noqa: F401

    special = {"publish": _publish, "publish-boto3": _publish, "fetch": _fetch, "fetch-boto3": _fetch}
    if job["variant"] in special:
        call = special[job["variant"]](job)
    else:
        call = _upload(job) if job["direction"] == "put" else _download(job)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    extra = call()
    seconds = time.perf_counter() - began
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    Path(report).write_text(json.dumps({"seconds": seconds, "cpu": cpu, "extra": extra}))
    return 0


# ------------------------------------------------------------------------------------------ parent side


def _put_manifest(s3: Any, bucket: str, source: Path) -> dict[str, Any]:
    """Store the manifest of ``source`` below PREFIX (as publish(manifest=True) writes it); return the
    PublishedResult dict that fetch() takes for the prefix."""
    from airflow_s3_publisher.hashing import b64
    from airflow_s3_publisher.manifest import ManifestEntry, build_manifest

    entries = []
    for path in _files(source):
        data = path.read_bytes()
        entries.append(
            ManifestEntry(path.relative_to(source).as_posix(), len(data), b64(hashlib.sha256(data).digest()))
        )
    body = build_manifest(PREFIX, entries)
    s3.put_object(Bucket=bucket, Key=PREFIX + MANIFEST_NAME, Body=body)
    return {
        "Bucket": bucket,
        "Key": PREFIX,
        "Region": REGION,
        "Endpoint": s3.meta.endpoint_url,
        "VersionID": "",
        "ChecksumSHA256": b64(hashlib.sha256(body).digest()),
    }


def _load() -> float:
    return os.getloadavg()[0]


def _run_child(job: dict[str, Any], env: dict[str, str], log: Path, timeout: float) -> tuple[float | None, str]:
    report = log.with_suffix(".json")
    report.unlink(missing_ok=True)
    job_file = log.with_suffix(".job")
    job_file.write_text(json.dumps(job))
    with open(log, "wb") as out:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(job_file), str(report)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0 or not report.exists():
        return None, f"exit {done.returncode}: {log.read_text(errors='replace')[-800:]}"
    data = json.loads(report.read_text())
    return float(data["seconds"]), f"cpu {data['cpu']:.1f}s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="upload variants, comma-separated")
    parser.add_argument("--get-variants", default=",".join(DEFAULT_GET_VARIANTS), help="download variants")
    parser.add_argument("--workdir", type=Path, help="keep the dataset here (default: a temp dir, removed)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)

    from tools.seaweed import Identity, SeaweedServer

    s5cmd = find_binary("s5cmd")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="engine-probe-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = ds.Sizes(
        small_files=args.files,
        small_size=args.size,
        big_size=0,
        medium_files=0,
        medium_size=0,
        csv_size=0,
        small_lo_files=0,
        small_hi_files=0,
        csv_lo_size=0,
        csv_hi_size=0,
    )
    data = ds.make_datasets(workdir / "data", sizes, ["small"])["small"]
    admin = Identity("admin", "PROBE" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30), ("Admin",))
    shutil.rmtree(workdir / "seaweed", ignore_errors=True)  # a fresh server every time, even in a kept workdir
    server = SeaweedServer(workdir / "seaweed", [admin], memory_limit="1GiB")
    server.start()
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    server_clock = CpuClock(server.pid)
    base = clean_environment(workdir)
    cli_env = {
        **base,
        "AWS_ACCESS_KEY_ID": admin.access_key,
        "AWS_SECRET_ACCESS_KEY": admin.secret_key,
        "AWS_REGION": REGION,
    }
    home = workdir / "airflow-home"
    (home / "dags").mkdir(parents=True, exist_ok=True)
    connection = {
        "conn_type": "aws",
        "login": admin.access_key,
        "password": admin.secret_key,
        "extra": {"endpoint_url": server.endpoint, "region_name": REGION},
    }
    child_env = {
        **base,
        "PYTHONPATH": str(REPO),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
    }
    common = {
        "endpoint": server.endpoint,
        "access_key": admin.access_key,
        "secret_key": admin.secret_key,
        "conn_id": CONN_ID,
    }
    s3 = server.client()
    results: dict[str, list[float]] = {}
    seq = 0

    def new_bucket() -> str:
        nonlocal seq
        seq += 1
        name = f"probe-{seq:04d}"
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="warm", Body=b"w")
        return name

    def stored(bucket: str) -> tuple[int, int]:
        count = size = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
            for item in page.get("Contents", []):
                if item["Key"] != PREFIX + MANIFEST_NAME:
                    count += 1
                    size += int(item["Size"])
        return count, size

    by_round: dict[tuple[str, int], float] = {}

    def record(name: str, rnd: int, seconds: float | None, note: str, load: float, ok: bool) -> None:
        if seconds is not None and ok:
            results.setdefault(name, []).append(seconds)
            by_round[name, rnd] = seconds
            rate = data.files / seconds
            print(f"  r{rnd} {name:<32} {seconds:6.2f} s {rate:7.0f} files/s  load {load:4.2f}  {note}", flush=True)
        else:
            print(f"  r{rnd} {name:<32} FAILED {note[:600]}", flush=True)

    timeout = 120 + data.files / 20
    try:
        print(f"SeaweedFS {server.endpoint}; {data.description}; load {_load():.2f}", flush=True)
        put_variants = [v for v in args.variants.split(",") if v]
        get_variants = [v for v in args.get_variants.split(",") if v]
        # One prefix to download, stored once by s5cmd.
        source_bucket = new_bucket()
        if get_variants:
            run_command(
                [
                    s5cmd or "s5cmd",
                    "--endpoint-url",
                    server.endpoint,
                    "--log",
                    "error",
                    "cp",
                    f"{data.path}/*",
                    f"s3://{source_bucket}/{PREFIX}",
                ],
                env=cli_env,
                timeout=timeout,
                log=logs / "seed.log",
            )
        keys = [f"{PREFIX}{p.relative_to(data.path).as_posix()}" for p in _files(data.path)]
        published = _put_manifest(s3, source_bucket, data.path) if get_variants else {}
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % max(1, len(put_variants))
            for variant in put_variants[shift:] + put_variants[:shift]:
                bucket = new_bucket()
                load = _load()
                server0 = server_clock.seconds()
                log = logs / f"{bucket}.log"
                if variant == "s5cmd":
                    argv = [
                        s5cmd or "s5cmd",
                        "--endpoint-url",
                        server.endpoint,
                        "--log",
                        "error",
                        "cp",
                        f"{data.path}/*",
                        f"s3://{bucket}/{PREFIX}",
                    ]
                    outcome = run_command(argv, env=cli_env, timeout=timeout, log=log)
                    seconds, note = (
                        outcome.seconds if outcome.ok else None,
                        outcome.error or (f"cpu {outcome.client_cpu:.1f}s" if outcome.client_cpu is not None else ""),
                    )
                else:
                    job = {**common, "direction": "put", "variant": variant, "bucket": bucket, "source": str(data.path)}
                    seconds, note = _run_child(job, child_env, log, timeout)
                count, size = stored(bucket)
                ok = (count, size) == (data.files, data.size)
                if not ok:
                    note += f" stored {count} files / {size} bytes, expected {data.files} / {data.size}"
                server1 = server_clock.seconds()
                if server0 is not None and server1 is not None:
                    note += f", server cpu {server1 - server0:.1f}s"
                record(variant, rnd, seconds, note, load, ok)
                s3.delete_bucket(Bucket=bucket)
            shift = (rnd - 1) % max(1, len(get_variants))
            for variant in get_variants[shift:] + get_variants[:shift]:
                dest = workdir / "fetched" / variant
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                load = _load()
                server0 = server_clock.seconds()
                log = logs / f"get-{variant}-{rnd}.log"
                if variant == "s5cmd-get":
                    argv = [
                        s5cmd or "s5cmd",
                        "--endpoint-url",
                        server.endpoint,
                        "--log",
                        "error",
                        "cp",
                        f"s3://{source_bucket}/{PREFIX}*",
                        f"{dest}/",
                    ]
                    outcome = run_command(argv, env=cli_env, timeout=timeout, log=log)
                    seconds, note = (
                        outcome.seconds if outcome.ok else None,
                        outcome.error or (f"cpu {outcome.client_cpu:.1f}s" if outcome.client_cpu is not None else ""),
                    )
                else:
                    job = {
                        **common,
                        "direction": "get",
                        "variant": variant,
                        "bucket": source_bucket,
                        "keys": keys,
                        "destination": str(dest),
                        "result": published,
                    }
                    seconds, note = _run_child(job, child_env, log, timeout)
                got = [p for p in dest.rglob("*") if p.is_file() and p.name != MANIFEST_NAME]
                size = sum(p.stat().st_size for p in got)
                ok = (len(got), size) == (data.files, data.size)
                if not ok:
                    note += f" fetched {len(got)} files / {size} bytes, expected {data.files} / {data.size}"
                server1 = server_clock.seconds()
                if server0 is not None and server1 is not None:
                    note += f", server cpu {server1 - server0:.1f}s"
                record(variant, rnd, seconds, note, load, ok)
                shutil.rmtree(dest, ignore_errors=True)
        print("\nmedians (files/s; ratio of medians to s5cmd of the same direction; median of the per-round ratios):")
        for direction, peer in (("put", "s5cmd"), ("get", "s5cmd-get")):
            names = put_variants if direction == "put" else get_variants
            peer_rate = data.files / statistics.median(results[peer]) if results.get(peer) else None
            for name in names:
                if not results.get(name):
                    print(f"  {name:<32} no successful run")
                    continue
                rate = data.files / statistics.median(results[name])
                ratio = f"{rate / peer_rate:5.2f}x" if peer_rate else "  -  "
                # Per round, against the peer's run of the same round: steadier when the load drifts.
                paired = [
                    by_round[peer, rnd] / by_round[name, rnd]
                    for rnd in range(1, args.rounds + 1)
                    if (peer, rnd) in by_round and (name, rnd) in by_round
                ]
                per_round = f"{statistics.median(paired):5.2f}x" if paired else "  -  "
                print(f"  {name:<32} {rate:7.0f} files/s  {ratio}  {per_round}  ({len(results[name])} runs)")
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
