"""Medians, the issue's targets (PASS/MISS), the printed table, latest.json and the PNG chart."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
RSS_LIMIT = 300 * MiB


@dataclass
class ToolSummary:
    """Medians of one tool on one case, over its successful runs."""

    tool: str
    runs: int
    ok: int
    seconds: float | None
    throughput: float | None
    client_cpu: float | None
    server_cpu: float | None
    rss_peak: int | None
    compression_ratio: float | None
    foreign_cpu: float | None
    errors: list[str] = field(default_factory=list)
    informational: bool = False


@dataclass
class CaseSummary:
    name: str
    title: str
    unit: str
    tools: list[ToolSummary]

    def tool(self, name: str) -> ToolSummary | None:
        for item in self.tools:
            if item.tool == name and item.ok:
                return item
        return None


@dataclass
class Target:
    """One line of the issue's targets, evaluated."""

    number: str
    title: str
    ours: str
    peer: str
    ratio: float | None
    need: str
    passed: bool | None  # None: could not be evaluated (a side failed or was not run)
    note: str = ""

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else "PASS" if self.passed else "MISS"


def _median(values: Sequence[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(
    name: str,
    title: str,
    unit: str,
    amount: float,
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    informational: set[str],
) -> CaseSummary:
    """Medians per tool. ``amount`` is files (unit files/s) or bytes (unit MB/s) per run."""
    tools: list[ToolSummary] = []
    for tool, records in runs.items():
        good = [r for r in records if r["ok"]]
        seconds = _median([r["seconds"] for r in good])
        per_second = None
        if seconds:
            per_second = amount / seconds / (1e6 if unit == "MB/s" else 1)
        tools.append(
            ToolSummary(
                tool=tool,
                runs=len(records),
                ok=len(good),
                seconds=seconds,
                throughput=per_second,
                client_cpu=_median([r.get("client_cpu") for r in good]),
                server_cpu=_median([r.get("server_cpu") for r in good]),
                rss_peak=max((int(r["rss_peak"]) for r in good if r.get("rss_peak")), default=None),
                compression_ratio=_median([r.get("extra", {}).get("compression_ratio") for r in good]),
                foreign_cpu=_median([r.get("foreign_cpu") for r in good]),
                errors=sorted({str(r["error"]) for r in records if not r["ok"]}),
                informational=tool in informational,
            )
        )
    return CaseSummary(name=name, title=title, unit=unit, tools=tools)


def _speed(item: ToolSummary | None, unit: str) -> str:
    if item is None or item.throughput is None:
        return "failed/not run"
    return f"{item.tool} {item.throughput:,.1f} {unit}"


def _secs(item: ToolSummary | None) -> str:
    if item is None or item.seconds is None:
        return "failed/not run"
    return f"{item.tool} {item.seconds:.2f} s"


def _ratio_target(
    number: str,
    title: str,
    ours: ToolSummary | None,
    peers: Sequence[ToolSummary | None],
    unit: str,
    need: float,
    *,
    by_time: bool = False,
) -> Target:
    """ours / best peer on throughput (higher is better); ``by_time``: peer seconds / ours seconds."""
    present = [p for p in peers if p is not None and p.seconds]
    best = min(present, key=lambda p: p.seconds or 0.0) if present else None
    show = _secs if by_time else (lambda item: _speed(item, unit))
    if ours is None or not ours.seconds or best is None or not best.seconds:
        return Target(number, title, show(ours), show(best), None, f">= {need:.2f}x", None)
    ratio = best.seconds / ours.seconds
    return Target(number, title, show(ours), show(best), ratio, f">= {need:.2f}x", ratio >= need)


def evaluate_targets(cases: Mapping[str, CaseSummary]) -> list[Target]:
    """The five targets of issue #3, each against the best peer of the same run."""
    targets: list[Target] = []

    def get(case: str, tool: str) -> ToolSummary | None:
        summary = cases.get(case)
        return summary.tool(tool) if summary else None

    if "plain-small" in cases:
        targets.append(
            _ratio_target(
                "1",
                "plain 10k x 4 KiB: files/s vs s5cmd",
                get("plain-small", "ours"),
                [get("plain-small", "s5cmd")],
                "files/s",
                1.0,
            )
        )
    for case, label in (("plain-big", "plain 1 GiB file"), ("plain-medium", "plain 100 x 10 MiB")):
        if case in cases:
            peers = [get(case, name) for name in ("s5cmd", "rclone", "aws-cli")]
            targets.append(_ratio_target("2", f"{label}: MB/s vs best CLI", get(case, "ours"), peers, "MB/s", 0.95))
    if "compressed-small" in cases:
        targets.append(
            _ratio_target(
                "3",
                "tar.gz publish of 10k dir vs s5cmd raw upload",
                get("compressed-small", "ours"),
                [get("compressed-small", "s5cmd")],
                "files/s",
                3.0,
                by_time=True,
            )
        )
    if "compressed-csv" in cases:
        ours, pigz = get("compressed-csv", "ours"), get("compressed-csv", "tar|pigz -1")
        speed = _ratio_target(
            "3", "tar.gz publish of 1 GiB CSV vs tar|pigz -1 alone", ours, [pigz], "MB/s", 1.0, by_time=True
        )
        if speed.ratio is not None:
            speed.passed = speed.ratio > 1.0
            speed.need = "> 1.00x"
        targets.append(speed)
        ours_ratio = ours.compression_ratio if ours else None
        pigz_ratio = pigz.compression_ratio if pigz else None
        targets.append(
            Target(
                "3",
                "  ... at equal or better compression ratio",
                f"ours {ours_ratio:.3f}" if ours_ratio else "failed/not run",
                f"pigz -1 {pigz_ratio:.3f}" if pigz_ratio else "failed/not run",
                ours_ratio / pigz_ratio if ours_ratio and pigz_ratio else None,
                ">= 1.00x",
                (ours_ratio >= pigz_ratio) if ours_ratio and pigz_ratio else None,
            )
        )
    peaks = [
        (case.name, item.rss_peak)
        for case in cases.values()
        if not case.name.startswith("fetch")
        for item in case.tools
        if item.tool == "ours" and item.rss_peak
    ]
    if peaks:
        where, peak = max(peaks, key=lambda pair: pair[1])
        targets.append(
            Target(
                "4",
                "peak RSS of a publish (whole process, VmHWM)",
                f"{peak / MiB:.0f} MiB ({where})",
                "-",
                None,
                "< 300 MiB",
                peak < RSS_LIMIT,
            )
        )
    elif any(not name.startswith("fetch") for name in cases):
        targets.append(Target("4", "peak RSS of a publish", "failed/not run", "-", None, "< 300 MiB", None))
    for case, label in (("fetch-small", "fetch of the 10k tar.gz"), ("fetch-csv", "fetch of the CSV tar.gz")):
        if case in cases:
            targets.append(
                _ratio_target(
                    "5",
                    f"{label} vs s5cmd cp + tar -xzf",
                    get(case, "ours"),
                    [get(case, "s5cmd cp + tar -xzf")],
                    "",
                    0.9,
                    by_time=True,
                )
            )
    return targets


def render_table(cases: Sequence[CaseSummary], targets: Sequence[Target]) -> str:
    """The printed report: per-case medians, then the targets."""
    lines: list[str] = [
        "CPU columns are medians of CPU seconds during a run: cli = the tool's processes, srv = SeaweedFS, "
        "other = every other process (noise: other work on the machine)",
        "",
    ]
    header = (
        f"{'case':<17} {'tool':<24} {'ok':>5} {'median s':>9} {'throughput':>17} {'cli CPU s':>9} "
        f"{'srv CPU s':>9} {'other CPU':>9} {'peak RSS':>9} {'gz ratio':>8}"
    )
    lines += [header, "-" * len(header)]
    for case in cases:
        for item in case.tools:
            name = item.tool + (" (info)" if item.informational else "")
            if item.seconds is None:
                reason = item.errors[0] if item.errors else "no run"
                lines.append(f"{case.name:<17} {name:<24} {item.ok:>2}/{item.runs:<2} FAILED: {reason[:150]}")
                continue
            rate = f"{item.throughput:,.1f} {case.unit}" if item.throughput else "-"
            lines.append(
                f"{case.name:<17} {name:<24} {item.ok:>2}/{item.runs:<2} {item.seconds:>9.2f} {rate:>17} "
                f"{_num(item.client_cpu):>9} {_num(item.server_cpu):>9} {_num(item.foreign_cpu):>9} "
                f"{(f'{item.rss_peak / MiB:.0f} MiB' if item.rss_peak else '-'):>9} "
                f"{(f'{item.compression_ratio:.3f}' if item.compression_ratio else '-'):>8}"
            )
            for error in item.errors:
                lines.append(f"{'':<17} {'':<24} failed run: {error[:150]}")
        lines.append("")
    lines.append("Targets (issue #3; ratio = ours / best peer, higher is better; by time: peer s / ours s)")
    head = f"{'#':<2} {'target':<52} {'ours':<26} {'best peer':<30} {'ratio':>7} {'need':>10}  result"
    lines += [head, "-" * len(head)]
    for target in targets:
        ratio = f"{target.ratio:.2f}x" if target.ratio is not None else "-"
        lines.append(
            f"{target.number:<2} {target.title:<52} {target.ours:<26} {target.peer:<30} {ratio:>7} "
            f"{target.need:>10}  {target.verdict}"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def draw_chart(cases: Sequence[CaseSummary], targets: Sequence[Target], footer: str, paths: Sequence[Path]) -> None:
    """One panel per case: median throughput per tool (ours highlighted), then the targets' verdicts,
    and the machine and date below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [case for case in cases if any(item.throughput for item in case.tools)]
    if not shown:
        return
    columns = 2
    rows = (len(shown) + 1 + columns - 1) // columns  # + 1: the targets panel
    figure, axes = plt.subplots(rows, columns, figsize=(13, 2.3 * rows + 1.2), squeeze=False)
    for axis, case in zip(axes.flat, shown, strict=False):
        tools = [item for item in case.tools if item.throughput]
        names = [item.tool for item in tools][::-1]
        values = [item.throughput or 0.0 for item in tools][::-1]
        colors = ["#d62728" if name == "ours" else ("#bbbbbb" if _is_info(case, name) else "#1f77b4") for name in names]
        bars = axis.barh(names, values, color=colors)
        for bar, value in zip(bars, values, strict=True):
            axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center", fontsize=8)
        axis.set_title(case.title, fontsize=10)
        axis.set_xlabel(case.unit + " (median; higher is better)", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.set_xlim(0, max(values) * 1.18)
    spare = list(axes.flat)[len(shown) :]
    for axis in spare:
        axis.axis("off")
    if spare and targets:
        lines = ["Targets (ours / best peer, same run)"]
        for target in targets:
            ratio = f"{target.ratio:.2f}x" if target.ratio is not None else target.ours.split(" (")[0]
            lines.append(f"{target.verdict:<4} {target.title.strip()[:52]:<52} {ratio:>8} need {target.need}")
        spare[0].text(
            -0.12,
            1.0,
            "\n".join(lines),
            va="top",
            ha="left",
            family="monospace",
            fontsize=6.8,
            transform=spare[0].transAxes,
        )
    figure.suptitle("airflow-s3-publisher vs peers on SeaweedFS (loopback, same server, same run)", fontsize=12)
    figure.text(0.5, 0.01, footer, ha="center", fontsize=8, color="#444444")
    figure.tight_layout(rect=(0, 0.04, 1, 0.97))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    plt.close(figure)


def _is_info(case: CaseSummary, name: str) -> bool:
    return any(item.tool == name and item.informational for item in case.tools)
