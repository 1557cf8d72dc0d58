"""Medians, the issues' targets (PASS/MISS), the scaling verdicts, the printed table, latest.json and the chart."""

from __future__ import annotations

import json
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB
RSS_LIMIT = 300 * MiB
#: Scaling is "flat" when the fastest point's throughput is at most this times the slowest's (max/min),
#: i.e. every point is within 25% of every other.
FLAT_RATIO = 1.25
#: ... and, across the archive sizes, when the peak RSS values lie within this much of each other.
RSS_SPREAD = 64 * MiB
#: Issue #9's "no regression" of the 1 GiB CSV tar.gz publish: 90% of the ratios measured before it
#: (1.14x ``tar | pigz -p 2 -1`` alone, 1.69x the ``... | s5cmd pipe`` pipeline); 10% is run-to-run noise.
CSV_VS_PIGZ = 1.03
CSV_VS_PIPE = 1.52

# Tool names, as the table and the chart show them.
OURS = "ours"
OURS_BOTO3 = "ours (boto3)"
PIGZ = "tar|pigz -1"
PIGZ_PIPE = "tar|pigz -1|s5cmd pipe"
FETCH_PEER = "s5cmd cp + tar -xzf"
PREFIX_PEER = "s5cmd cp 'prefix/*'"


@dataclass(frozen=True)
class Series:
    """One scaling series: ours doing the same work at three sizes (case names, smallest first).

    The middle case is a main case (its runs of ours are the middle point), the others ``scale-*``.
    """

    label: str
    unit: str  # "files/s" (x: files) or "MB/s" (x: bytes)
    cases: tuple[str, str, str]

    @property
    def middle(self) -> str:
        return self.cases[1]


SCALING = (
    Series("plain publish", "files/s", ("scale-publish-lo", "plain-small", "scale-publish-hi")),
    Series("plain fetch", "files/s", ("scale-fetch-lo", "fetch-plain-small", "scale-fetch-hi")),
    Series("tar.gz publish", "MB/s", ("scale-csv-lo", "compressed-csv", "scale-csv-hi")),
)


@dataclass(frozen=True)
class ScalePoint:
    """Ours on one case of a series: how much work (files or bytes), how fast, how much memory."""

    case: str
    amount: float
    throughput: float | None
    rss_peak: int | None


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
    engines: list[str] = field(default_factory=list)  # request engines ours used (native, boto3)


@dataclass
class CaseSummary:
    name: str
    title: str
    unit: str
    tools: list[ToolSummary]
    amount: float | None = None  # files (unit files/s) or bytes (unit MB/s) per run

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
    informational: bool = False  # shown for information, not one of the current issue's targets

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "info" if self.informational and self.need == "-" else "n/a"
        return "PASS" if self.passed else "MISS"


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
                engines=sorted({str(e) for r in good for e in (r.get("extra", {}).get("engines") or [])}),
            )
        )
    return CaseSummary(name=name, title=title, unit=unit, tools=tools, amount=amount)


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
    """Issue #9's targets, each against the best peer of the same run, then its scaling verdicts, then (for
    information) the issue #3 targets it does not restate and what the native engine brings."""
    targets: list[Target] = []

    def get(case: str, tool: str) -> ToolSummary | None:
        summary = cases.get(case)
        return summary.tool(tool) if summary else None

    def ran(case: str, tool: str) -> bool:  # run (maybe failed): ``--only scale`` runs some cases with ours alone
        return case in cases and any(item.tool == tool for item in cases[case].tools)

    if ran("plain-small", "s5cmd"):
        first = _ratio_target(
            "1",
            "plain publish 10k x 4 KiB vs s5cmd",
            get("plain-small", OURS),
            [get("plain-small", "s5cmd")],
            "files/s",
            1.0,
        )
        if first.ratio is not None:
            first.note = "aim 1.20x: " + ("reached" if first.ratio >= 1.2 else "not yet")
        targets.append(first)
    if ran("fetch-plain-small", PREFIX_PEER):
        targets.append(
            _ratio_target(
                "2",
                "plain fetch of that prefix (manifest) vs s5cmd cp",
                get("fetch-plain-small", OURS),
                [get("fetch-plain-small", PREFIX_PEER)],
                "files/s",
                1.0,
                by_time=True,
            )
        )
    if ran("fetch-small", FETCH_PEER):
        targets.append(
            _ratio_target(
                "3",
                "fetch + extract 10k tar.gz vs s5cmd cp + tar -xzf",
                get("fetch-small", OURS),
                [get("fetch-small", FETCH_PEER)],
                "",
                1.0,
                by_time=True,
            )
        )
    if ran("plain-big", "s5cmd"):
        peers = [get("plain-big", name) for name in ("s5cmd", "rclone", "aws-cli")]
        targets.append(
            _ratio_target(
                "4", "plain 1 GiB file, checksums on, vs best CLI", get("plain-big", OURS), peers, "MB/s", 1.0
            )
        )
    if ran("compressed-small", PIGZ_PIPE):
        targets.append(
            _ratio_target(
                "5",
                "tar.gz publish of 10k dir vs tar|pigz|s5cmd pipe",
                get("compressed-small", OURS),
                [get("compressed-small", PIGZ_PIPE)],
                "files/s",
                1.0,
                by_time=True,
            )
        )
    if ran("compressed-csv", PIGZ):
        targets += _csv_targets(
            get("compressed-csv", OURS), get("compressed-csv", PIGZ), get("compressed-csv", PIGZ_PIPE)
        )
    targets += scaling_targets(cases)
    targets += _informational_targets(cases, get)
    return targets


def _csv_targets(ours: ToolSummary | None, pigz: ToolSummary | None, pipe: ToolSummary | None) -> list[Target]:
    """Row 6: no regression of the 1 GiB CSV tar.gz publish (speed against both peers, and gzip ratio)."""
    alone = _ratio_target(
        "6", "tar.gz publish 1 GiB CSV vs tar|pigz -1 alone", ours, [pigz], "MB/s", CSV_VS_PIGZ, by_time=True
    )
    alone.note = "was 1.14x"
    piped = _ratio_target("6", "  ... vs tar|pigz -1|s5cmd pipe", ours, [pipe], "MB/s", CSV_VS_PIPE, by_time=True)
    piped.note = "was 1.69x"
    ours_ratio = ours.compression_ratio if ours else None
    pigz_ratio = pigz.compression_ratio if pigz else None
    ratio = Target(
        "6",
        "  ... at equal or better compression ratio",
        f"ours {ours_ratio:.3f}" if ours_ratio else "failed/not run",
        f"pigz -1 {pigz_ratio:.3f}" if pigz_ratio else "failed/not run",
        ours_ratio / pigz_ratio if ours_ratio and pigz_ratio else None,
        ">= 1.00x",
        (ours_ratio >= pigz_ratio) if ours_ratio and pigz_ratio else None,
    )
    return [alone, piped, ratio]


def scaling_points(cases: Mapping[str, CaseSummary], series: Series) -> list[ScalePoint]:
    """Ours on each case of ``series`` that was run (smallest first; a failed run has no throughput)."""
    points: list[ScalePoint] = []
    for name in series.cases:
        summary = cases.get(name)
        if summary is None or not summary.amount:
            continue
        ours = summary.tool(OURS)
        points.append(
            ScalePoint(name, summary.amount, ours.throughput if ours else None, ours.rss_peak if ours else None)
        )
    return points


def scaling_targets(cases: Mapping[str, CaseSummary]) -> list[Target]:
    """Rows 7 and 8 (issue #9 item 3, flat scaling), for each series whose ``scale-*`` cases were run.

    * throughput flat: max / min of the three medians <= :data:`FLAT_RATIO`;
    * small files: peak RSS at the largest count < 300 MiB;
    * archives: peak RSS flat (max - min <= :data:`RSS_SPREAD`) and below 300 MiB at every size.
    """
    targets: list[Target] = []
    for series in SCALING:
        points = scaling_points(cases, series)
        if not any(point.case != series.middle for point in points):
            continue
        number = "7" if series.unit == "files/s" else "8"
        at = "/".join(_short(point.amount, series.unit) for point in points)
        rates = [point.throughput for point in points]
        complete = len(points) == len(series.cases)
        known = [rate for rate in rates if rate]
        ratio = max(known) / min(known) if complete and len(known) == len(rates) else None
        targets.append(
            Target(
                number,
                f"{series.label} {series.unit} flat over sizes (max/min)",
                "/".join(f"{rate:,.0f}" if rate else "failed" for rate in rates) + f" at {at}",
                "-",
                ratio,
                f"<= {FLAT_RATIO:.2f}x",
                None if ratio is None else ratio <= FLAT_RATIO,
            )
        )
        if series.unit == "files/s":
            top = points[-1] if points[-1].case == series.cases[-1] else None
            peak = top.rss_peak if top else None
            targets.append(
                Target(
                    number,
                    f"{series.label}: peak RSS at the most files",
                    f"{peak / MiB:.0f} MiB at {_short(top.amount, series.unit)}" if top and peak else "failed/not run",
                    "-",
                    None,
                    "< 300 MiB",
                    None if peak is None else peak < RSS_LIMIT,
                )
            )
            continue
        peaks = [point.rss_peak for point in points]
        present = [peak for peak in peaks if peak]
        full = complete and len(present) == len(peaks)
        spread = max(present) - min(present) if full else None
        targets.append(
            Target(
                number,
                f"{series.label}: peak RSS flat over sizes (spread)",
                "/".join(f"{peak / MiB:.0f}" if peak else "failed" for peak in peaks) + f" MiB at {at}",
                "-",
                None,
                f"<= {RSS_SPREAD // MiB} MiB, < 300",
                None if spread is None else spread <= RSS_SPREAD and max(present) < RSS_LIMIT,
                note=f"spread {spread / MiB:.0f} MiB" if spread is not None else "",
            )
        )
    return targets


def _informational_targets(cases: Mapping[str, CaseSummary], get: Any) -> list[Target]:
    """Issue #3's targets that issue #9 does not restate, and ours against ours on the boto3 engine."""
    targets: list[Target] = []
    if "plain-medium" in cases:
        peers = [get("plain-medium", name) for name in ("s5cmd", "rclone", "aws-cli")]
        targets.append(
            _ratio_target("i", "plain 100 x 10 MiB vs best CLI", get("plain-medium", OURS), peers, "MB/s", 0.95)
        )
    if "compressed-small" in cases:
        targets.append(
            _ratio_target(
                "i",
                "tar.gz publish of 10k dir vs s5cmd raw upload",
                get("compressed-small", OURS),
                [get("compressed-small", "s5cmd")],
                "files/s",
                3.0,
                by_time=True,
            )
        )
    publishes = [case for case in cases.values() if not case.name.startswith(("fetch", "scale-"))]
    peaks = [
        (case.name, item.rss_peak) for case in publishes for item in case.tools if item.tool == OURS and item.rss_peak
    ]
    if peaks:
        where, peak = max(peaks, key=lambda pair: pair[1])
        targets.append(
            Target(
                "i",
                "peak RSS of a publish (whole process, VmHWM)",
                f"{peak / MiB:.0f} MiB ({where})",
                "-",
                None,
                "< 300 MiB",
                peak < RSS_LIMIT,
            )
        )
    if "fetch-csv" in cases:
        targets.append(
            _ratio_target(
                "i",
                "fetch of the CSV tar.gz vs s5cmd cp + tar -xzf",
                get("fetch-csv", OURS),
                [get("fetch-csv", FETCH_PEER)],
                "",
                0.9,
                by_time=True,
            )
        )
    for case, label in (("plain-small", "plain publish"), ("fetch-plain-small", "plain fetch")):
        ours, boto = get(case, OURS), get(case, OURS_BOTO3)
        if case in cases and any(item.tool == OURS_BOTO3 for item in cases[case].tools):
            gain = _ratio_target(
                "i", f"{label}: default engine vs boto3 engine", ours, [boto], "files/s", 0.0, by_time=True
            )
            gain.need, gain.passed = "-", None
            engines = ",".join(ours.engines) if ours and ours.engines else "?"
            gain.note = f"ours used: {engines}"
            targets.append(gain)
    for target in targets:
        target.informational = True
    return targets


def _short(amount: float, unit: str) -> str:
    """1000 -> 1k, 100000 -> 100k (files); 268435456 -> 256M, 4294967296 -> 4G (bytes)."""
    if unit == "files/s":
        return f"{amount / 1000:g}k" if amount >= 1000 else f"{amount:g}"
    mib = round(amount / MiB)  # a CSV ends on a whole line, a few bytes short of its nominal size
    return f"{mib / 1024:g}G" if mib >= 1024 and mib % 256 == 0 else f"{mib}M"


def render_table(cases: Sequence[CaseSummary], targets: Sequence[Target]) -> str:
    """The printed report: per-case medians, then the targets, the scaling verdicts and the informational lines."""
    lines: list[str] = [
        "CPU columns are medians of CPU seconds during a run: cli = the tool's processes, srv = SeaweedFS, "
        "other = every other process (noise: other work on the machine); engine = the request engine ours used",
        "",
    ]
    header = (
        f"{'case':<17} {'tool':<24} {'ok':>5} {'median s':>9} {'throughput':>17} {'cli CPU s':>9} "
        f"{'srv CPU s':>9} {'other CPU':>9} {'peak RSS':>9} {'gz ratio':>8} {'engine':>7}"
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
                f"{(f'{item.compression_ratio:.3f}' if item.compression_ratio else '-'):>8} "
                f"{','.join(item.engines) or '-':>7}"
            )
            for error in item.errors:
                lines.append(f"{'':<17} {'':<24} failed run: {error[:150]}")
        lines.append("")
    sections = (
        (
            "Targets (issue #9; ratio = ours / best peer, higher is better; by time: peer s / ours s)",
            [t for t in targets if not t.informational and t.number not in ("7", "8")],
        ),
        (
            f"Scaling (issue #9 item 3; ours alone; flat: max/min throughput <= {FLAT_RATIO:.2f}x; "
            f"archives: peak RSS spread <= {RSS_SPREAD // MiB} MiB)",
            [t for t in targets if not t.informational and t.number in ("7", "8")],
        ),
        (
            "For information (issue #3 targets not restated by #9; what the default engine brings over boto3)",
            [t for t in targets if t.informational],
        ),
    )
    for title, rows in sections:
        if not rows:
            continue
        lines.append(title)
        head = f"{'#':<2} {'target':<50} {'ours':<36} {'best peer':<30} {'ratio':>7} {'need':>16}  result"
        lines += [head, "-" * len(head)]
        for target in rows:
            ratio = f"{target.ratio:.2f}x" if target.ratio is not None else "-"
            note = f"  ({target.note})" if target.note else ""
            lines.append(
                f"{target.number:<2} {target.title:<50} {target.ours:<36} {target.peer:<30} {ratio:>7} "
                f"{target.need:>16}  {target.verdict}{note}"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def draw_chart(cases: Sequence[CaseSummary], targets: Sequence[Target], footer: str, paths: Sequence[Path]) -> None:
    """One panel per main case (median throughput per tool, ours highlighted), the scaling panels (ours'
    throughput and peak RSS against the amount of work), the targets' verdicts, and the machine and date."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    by_name = {case.name: case for case in cases}
    shown = [
        case for case in cases if not case.name.startswith("scale-") and any(item.throughput for item in case.tools)
    ]
    curves = [(series, scaling_points(by_name, series)) for series in SCALING]
    curves = [(series, points) for series, points in curves if sum(1 for p in points if p.throughput) >= 2]
    if not shown and not curves:
        return
    text = _target_lines(targets)
    case_rows = (len(shown) + 1) // 2
    heights = [2.3] * case_rows + ([3.2] if curves else []) + [0.125 * len(text) + 0.5]
    figure = plt.figure(figsize=(13, sum(heights) + 1.0))
    grid = GridSpec(len(heights), 2, figure=figure, height_ratios=heights)
    for index, case in enumerate(shown):
        _case_panel(figure.add_subplot(grid[index // 2, index % 2]), case)
    groups = [[c for c in curves if c[0].unit == unit] for unit in ("files/s", "MB/s")]
    for column, group in enumerate(g for g in groups if g):
        _scaling_panel(figure.add_subplot(grid[case_rows, column]), group, group[0][0].unit)
    notes = figure.add_subplot(grid[-1, :])
    notes.axis("off")
    notes.text(
        0.0, 1.0, "\n".join(text), va="top", ha="left", family="monospace", fontsize=7.2, transform=notes.transAxes
    )
    figure.suptitle("airflow-s3-publisher vs peers on SeaweedFS (loopback, same server, same run)", fontsize=12)
    figure.text(0.5, 0.005, footer, ha="center", fontsize=8, color="#444444")
    figure.tight_layout(rect=(0, 0.015, 1, 0.985))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    plt.close(figure)


def _case_panel(axis: Any, case: CaseSummary) -> None:
    tools = [item for item in case.tools if item.throughput]
    names = [item.tool for item in tools][::-1]
    values = [item.throughput or 0.0 for item in tools][::-1]
    bars = axis.barh(names, values, color=[_color(case, name) for name in names])
    for bar, value in zip(bars, values, strict=True):
        axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center", fontsize=8)
    axis.set_title("\n".join(textwrap.wrap(case.title, 72)), fontsize=9.5)
    axis.set_xlabel(case.unit + " (median; higher is better)", fontsize=8)
    axis.tick_params(labelsize=8)
    axis.set_xlim(0, max(values) * 1.18)


def _color(case: CaseSummary, name: str) -> str:
    if name == OURS:
        return "#d62728"
    if name.startswith(OURS):
        return "#f4a582"  # ours on another engine
    return "#bbbbbb" if _is_info(case, name) else "#1f77b4"


_SERIES_COLORS = {"plain publish": "#d62728", "plain fetch": "#1f77b4", "tar.gz publish": "#2ca02c"}


def _scaling_panel(axis: Any, curves: Sequence[tuple[Series, Sequence[ScalePoint]]], unit: str) -> None:
    """Throughput (solid, left axis) and peak RSS (dashed, right axis) of ours against files or bytes."""
    memory = axis.twinx()
    ticks: dict[float, str] = {}
    for series, points in curves:
        color = _SERIES_COLORS.get(series.label, "#444444")
        rated = [p for p in points if p.throughput]
        xs = [p.amount for p in rated]
        axis.plot(xs, [p.throughput for p in rated], "o-", color=color, label=f"{series.label} {unit}")
        for point in rated:
            axis.annotate(
                f"{point.throughput:,.0f}",
                (point.amount, point.throughput or 0.0),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
                color=color,
            )
        sized = [p for p in points if p.rss_peak]
        memory.plot(
            [p.amount for p in sized],
            [(p.rss_peak or 0) / MiB for p in sized],
            "s--",
            color=color,
            alpha=0.6,
            label=f"{series.label} peak RSS",
        )
        ticks.update({p.amount: _short(p.amount, unit) for p in points})
    memory.axhline(RSS_LIMIT / MiB, color="#888888", linestyle=":", linewidth=1)
    memory.text(min(ticks), RSS_LIMIT / MiB, " 300 MiB", fontsize=7, color="#666666", va="bottom")
    memory.set_ylim(0, RSS_LIMIT / MiB * 1.25)
    memory.set_ylabel("peak RSS, MiB (dashed)", fontsize=8)
    axis.set_xscale("log")
    axis.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    axis.minorticks_off()
    axis.set_ylim(0, axis.get_ylim()[1] * 1.55)  # headroom: the legend sits above the curves
    axis.set_ylabel(f"{unit} (median, solid)", fontsize=8)
    what = "files" if unit == "files/s" else "archive input size"
    axis.set_xlabel(what + " (log scale)", fontsize=8)
    axis.set_title(f"scaling, ours alone: {unit} and peak RSS vs {what}", fontsize=10)
    axis.tick_params(labelsize=8)
    memory.tick_params(labelsize=8)
    lines = axis.get_legend_handles_labels()
    extra = memory.get_legend_handles_labels()
    axis.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="upper center", ncol=2, framealpha=0.9)


def _target_lines(targets: Sequence[Target]) -> list[str]:
    sections = (
        (
            "Issue #9 targets (ours / best peer, same run)",
            [t for t in targets if not t.informational and t.number not in ("7", "8")],
        ),
        (f"Scaling, ours alone (flat: max/min <= {FLAT_RATIO:.2f}x)", [t for t in targets if t.number in ("7", "8")]),
        ("For information", [t for t in targets if t.informational]),
    )
    lines: list[str] = []
    for title, rows in sections:
        if not rows:
            continue
        lines.append(title)
        for target in rows:
            value = f"{target.ratio:.2f}x" if target.ratio is not None else target.ours.split(" (")[0]
            if target.number in ("7", "8") and target.ratio is not None:
                value = f"{target.ratio:.2f}x  ({target.ours})"
            lines.append(f"  {target.verdict:<4} {target.title.strip()[:52]:<52} {value:<38} need {target.need}")
        lines.append("")
    return lines[:-1]


def _is_info(case: CaseSummary, name: str) -> bool:
    return any(item.tool == name and item.informational for item in case.tools)
