"""How long a benchmark run will take, printed before it starts.

Each timed run costs its tool's start-up plus the work at the tool's rate, plus what the harness does
around it (waiting for a quiet machine, a fresh bucket, listing it to check it, ``sync``); fetch cases
also publish what they fetch. Rates come from the last run's ``latest.json`` when it has the same case
and tool (scaled to this run's amount of work), else from nominal rates measured on the reference
machine (2 cores shared with SeaweedFS; ours on the boto3 engine, the slow case). Pure logic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Nominal throughput per (case kind, tool): files/s for the small-files cases, MB/s for the others.
NOMINAL_FILES: Mapping[tuple[str, str], float] = {
    ("plain", "ours"): 400,
    ("plain", "ours (boto3)"): 400,
    ("plain", "s5cmd"): 1500,
    ("plain", "rclone"): 600,
    ("plain", "aws-cli"): 300,
    ("plain", "boto3 x32"): 250,
    ("fetch-plain", "ours"): 400,
    ("fetch-plain", "ours (boto3)"): 400,
    ("fetch-plain", "s5cmd cp 'prefix/*'"): 1500,
    ("compressed", "ours"): 8000,
    ("compressed", "s5cmd"): 1500,
    ("compressed", "tar|pigz -1"): 10000,
    ("compressed", "tar|pigz -1|s5cmd pipe"): 8000,
    ("fetch", "ours"): 5000,
    ("fetch", "s5cmd cp + tar -xzf"): 10000,
}
NOMINAL_MBS: Mapping[tuple[str, str], float] = {
    ("plain", "ours"): 130,
    ("plain", "s5cmd"): 140,
    ("plain", "rclone"): 130,
    ("plain", "aws-cli"): 120,
    ("plain", "boto3 x32"): 120,
    ("compressed", "ours"): 220,
    ("compressed", "tar|pigz -1"): 200,
    ("compressed", "tar|pigz -1|s5cmd pipe"): 140,
    ("fetch", "ours"): 250,
    ("fetch", "s5cmd cp + tar -xzf"): 150,
}
#: Seconds a Python child (ours, boto3 x32) takes to start and import Airflow, around its timed call.
CHILD_START = 5.0
CLI_START = 0.5
#: The harness around each run: bucket, sync, checks (plus up to ``quiet_wait`` waiting for quiet).
RUN_OVERHEAD = 1.5
LIST_FILES_PER_S = 20_000  # listing a bucket or walking a tree to check a run
GENERATE_FILES_PER_S = 6_000
GENERATE_BYTES_PER_S = 200e6


@dataclass(frozen=True)
class RunPlan:
    """One case as the estimate sees it: its kind, unit, tools, and the files and bytes of its dataset."""

    case: str
    kind: str
    unit: str
    tools: tuple[str, ...]
    files: int
    size: int

    @property
    def amount(self) -> float:
        return self.files if self.unit == "files/s" else self.size / 1e6


def history_rates(path: Path) -> tuple[dict[tuple[str, str], float], str]:
    """Median throughput per (case, tool) of a saved ``latest.json`` (empty if there is none), and where
    the estimate's rates come from."""
    try:
        payload: dict[str, Any] = json.loads(path.read_text())
        rates = {
            (case["name"], tool["tool"]): float(tool["throughput"])
            for case in payload["summaries"].values()
            for tool in case["tools"]
            if tool.get("throughput")
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}, "nominal (no earlier results)"
    if not rates:
        return {}, "nominal (no earlier results)"
    return rates, f"from the {payload.get('mode', '?')} run of {str(payload.get('started', '?'))[:16]}, else nominal"


def _rate(plan: RunPlan, tool: str, history: Mapping[tuple[str, str], float]) -> float:
    if (plan.case, tool) in history:
        return history[plan.case, tool]
    nominal = NOMINAL_FILES if plan.unit == "files/s" else NOMINAL_MBS
    kind = "plain" if plan.kind == "fetch-plain" and plan.unit != "files/s" else plan.kind
    return nominal.get((kind, tool), nominal.get((kind, "ours"), 100.0))


def run_seconds(plan: RunPlan, tool: str, history: Mapping[tuple[str, str], float]) -> float:
    """Wall seconds of one run of ``tool`` on ``plan``, start-up and checks included."""
    start = CHILD_START if tool.startswith("ours") or tool == "boto3 x32" else CLI_START
    return start + plan.amount / _rate(plan, tool, history) + RUN_OVERHEAD + plan.files / LIST_FILES_PER_S


def case_seconds(plan: RunPlan, runs: int, history: Mapping[tuple[str, str], float], quiet_wait: float) -> float:
    """All rounds of one case, with its untimed setup (the archive or prefix a fetch case fetches)."""
    per_round = sum(run_seconds(plan, tool, history) + min(quiet_wait, 1.0) for tool in plan.tools)
    # The setup publish runs at about our fetch rate of the same case (the same engine moves the same
    # objects), which the history has; else at the nominal publish rate.
    setup = 0.0
    if plan.kind == "fetch":  # a fresh tar.gz each round, published by ours
        setup = runs * run_seconds(
            RunPlan(plan.case, "compressed", plan.unit, ("ours",), plan.files, plan.size), "ours", history
        )
    elif plan.kind == "fetch-plain":  # one prefix with a manifest for all rounds
        setup = run_seconds(RunPlan(plan.case, "plain", plan.unit, ("ours",), plan.files, plan.size), "ours", history)
    return runs * per_round + setup


def estimate_minutes(
    plans: Sequence[RunPlan],
    runs: int,
    generate: Sequence[tuple[int, int]],
    history: Mapping[tuple[str, str], float],
    *,
    quiet_wait: float = 10.0,
) -> float:
    """Minutes for ``runs`` rounds of every case, plus generating the datasets (files, bytes) not present."""
    seconds = sum(case_seconds(plan, runs, history, quiet_wait) for plan in plans)
    seconds += sum(files / GENERATE_FILES_PER_S + size / GENERATE_BYTES_PER_S for files, size in generate)
    return (seconds + 15) / 60  # + server start, tool checks, the report
