"""Extraction alone: our two extractors against GNU ``tar -xzf``, on one archive, alternating.

    .venv/bin/python benchmarks/extract_alone.py [--runs 5] [--dir /dev/shm] [--archive A.tar.gz]

Without ``--archive`` it builds the ``fetch-small`` archive (10,000 x 4 KiB random files in 100
directories, written by ``write_tar_gz``) in a temp dir. Each run extracts into a fresh directory under
``--dir`` (tmpfs keeps the file system out of the figure; a disk puts it in), in a fresh child
process, and reports wall seconds and CPU seconds (user + system, children included, so gzip's share
of ``tar -xzf`` counts). Rounds rotate the order. Directories are deleted only after all runs: on ext4
without a journal, creating files soon after deleting many is several times slower (inode allocation
skips recently deleted inodes), which would punish whichever tool runs next.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = """
import json, os, resource, sys, time
from pathlib import Path
from airflow_s3_publisher import extract, extract_native
tool, archive, dest = sys.argv[1:4]
function = {"tarfile": extract.extract_tar_gz, "libarchive": extract_native.extract_tar_gz}[tool]
Path(dest).mkdir()
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
with open(archive, "rb", buffering=0) as stream:
    stats = function(stream, Path(dest))
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"wall": wall, "cpu": cpu, "files": stats.files}))
"""


def make_archive(workdir: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from airflow_s3_publisher.archive import write_tar_gz
    from airflow_s3_publisher.sources import collect_source

    source = workdir / "data"
    for index in range(10_000):
        folder = source / f"d{index % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}.bin").write_bytes(os.urandom(4096))
    archive = workdir / "small.tar.gz"
    with open(archive, "wb") as out:
        write_tar_gz(collect_source(source), out)
    shutil.rmtree(source)
    return archive


def run_once(tool: str, archive: Path, dest: Path) -> dict[str, float]:
    if tool == "tar -xzf":
        dest.mkdir()
        before = os.times()
        start = os.times().elapsed
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
        after = os.times()
        cpu = after.children_user - before.children_user + after.children_system - before.children_system
        return {"wall": after.elapsed - start, "cpu": cpu}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, tool, str(archive), str(dest)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to extract")
    parser.add_argument("--archive", type=Path, help="a tar.gz to extract (default: build the 10k x 4 KiB one)")
    args = parser.parse_args()
    tools = ["tar -xzf", "tarfile", "libarchive"]
    with tempfile.TemporaryDirectory(prefix="extract-alone-") as tmp:
        archive = args.archive or make_archive(Path(tmp))
        with tempfile.TemporaryDirectory(prefix="extract-alone-out-", dir=args.dir) as out:
            results: dict[str, list[dict[str, float]]] = {tool: [] for tool in tools}
            for round_ in range(args.runs):
                order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
                for tool in order:
                    result = run_once(tool, archive, Path(out) / f"{tool.split()[0]}-{round_}")
                    results[tool].append(result)
                    print(f"r{round_} {tool:10} {result['wall']:6.3f} s wall {result['cpu']:6.3f} s CPU", flush=True)
    with open("/proc/loadavg") as load:
        print(f"\nload average after: {load.read().split()[:3]}")
    print(f"medians of {args.runs} ({archive.name}, extracting under {args.dir}):")
    base = statistics.median(r["wall"] for r in results["tar -xzf"])
    for tool, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        print(f"  {tool:10} {wall:6.3f} s wall  {cpu:6.3f} s CPU  ({base / wall:4.2f}x tar's speed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
