"""The benchmark harness's pure logic: scaling verdicts, target selection, case selection, datasets, estimates.

No benchmark is run here (nothing is timed): these check that the verdicts the harness prints follow
the definitions in benchmarks/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from benchlib import datasets as ds  # noqa: E402
from benchlib.estimate import RunPlan, case_seconds, estimate_minutes, history_rates  # noqa: E402
from benchlib.report import (  # noqa: E402
    PIGZ,
    PIGZ_PIPE,
    CaseSummary,
    Target,
    ToolSummary,
    evaluate_targets,
    render_table,
    scaling_targets,
)

MiB = 1024 * 1024


def tool(name: str, seconds: float, amount: float, unit: str, rss_mib: float | None = None) -> ToolSummary:
    per_second = amount / seconds / (1e6 if unit == "MB/s" else 1)
    return ToolSummary(
        tool=name,
        runs=1,
        ok=1,
        seconds=seconds,
        throughput=per_second,
        client_cpu=None,
        server_cpu=None,
        rss_peak=int(rss_mib * MiB) if rss_mib else None,
        compression_ratio=None,
        foreign_cpu=None,
    )


def ours_case(name: str, amount: float, unit: str, rate: float, rss_mib: float) -> CaseSummary:
    """A case where ours ran alone at ``rate`` (files/s or MB/s) with that peak RSS."""
    seconds = amount / rate / (1e6 if unit == "MB/s" else 1)
    return CaseSummary(name, name, unit, [tool("ours", seconds, amount, unit, rss_mib)], amount=amount)


def by_title(targets: list[Target], text: str) -> Target:
    found = [t for t in targets if text in t.title]
    assert len(found) == 1, [t.title for t in targets]
    return found[0]


def publish_series(rates: tuple[float, float, float], rss: tuple[float, float, float]) -> dict[str, CaseSummary]:
    names = ("scale-publish-lo", "plain-small", "scale-publish-hi")
    counts = (1_000, 10_000, 100_000)
    return {
        name: ours_case(name, count, "files/s", rate, peak)
        for name, count, rate, peak in zip(names, counts, rates, rss, strict=True)
    }


def test_files_per_second_within_25_percent_is_flat() -> None:
    targets = scaling_targets(publish_series((1000, 1100, 1240), (150, 160, 210)))
    flat = by_title(targets, "plain publish files/s flat")
    assert flat.ratio == pytest.approx(1.24)
    assert flat.passed is True
    assert "1k/10k/100k" in flat.ours
    memory = by_title(targets, "plain publish: peak RSS at the most files")
    assert memory.passed is True
    assert "210 MiB at 100k" in memory.ours


def test_a_slow_large_point_or_a_big_process_misses() -> None:
    targets = scaling_targets(publish_series((1000, 1100, 790), (150, 160, 310)))
    assert by_title(targets, "plain publish files/s flat").passed is False  # 1100 / 790 = 1.39
    assert by_title(targets, "plain publish: peak RSS at the most files").passed is False


def test_a_missing_point_cannot_be_judged() -> None:
    cases = publish_series((1000, 1100, 1000), (150, 160, 170))
    del cases["scale-publish-hi"]
    targets = scaling_targets(cases)
    assert by_title(targets, "plain publish files/s flat").passed is None
    assert by_title(targets, "plain publish: peak RSS at the most files").passed is None


def test_a_failed_point_cannot_be_judged() -> None:
    cases = publish_series((1000, 1100, 1000), (150, 160, 170))
    cases["scale-publish-hi"].tools[0] = ToolSummary("ours", 1, 0, None, None, None, None, None, None, None, ["boom"])
    targets = scaling_targets(cases)
    assert by_title(targets, "plain publish files/s flat").passed is None
    assert "failed" in by_title(targets, "plain publish files/s flat").ours


def test_without_scaling_cases_there_is_no_scaling_verdict() -> None:
    only_middle = {"plain-small": ours_case("plain-small", 10_000, "files/s", 1000, 150)}
    assert scaling_targets(only_middle) == []


@pytest.mark.parametrize(
    ("rss", "passed"),
    [((180, 200, 240), True), ((150, 200, 230), False), ((250, 280, 310), False)],
    ids=["flat", "spread-80-MiB", "over-300-MiB"],
)
def test_archive_memory_must_be_flat_and_under_300_mib(rss: tuple[int, int, int], passed: bool) -> None:
    names = ("scale-csv-lo", "compressed-csv", "scale-csv-hi")
    sizes = (256 * MiB - 61, 1024 * MiB - 17, 4096 * MiB - 61)  # CSVs end on a whole line
    cases = {name: ours_case(name, size, "MB/s", 200, peak) for name, size, peak in zip(names, sizes, rss, strict=True)}
    targets = scaling_targets(cases)
    assert by_title(targets, "tar.gz publish MB/s flat").passed is True
    memory = by_title(targets, "tar.gz publish: peak RSS flat")
    assert memory.passed is passed
    assert "at 256M/1G/4G" in memory.ours


def test_peer_targets_appear_only_when_the_peer_ran() -> None:
    """``--only scale`` runs a main case with ours alone: no 'n/a' line for peers it never ran."""
    cases = {
        "compressed-csv": ours_case("compressed-csv", 1024 * MiB, "MB/s", 200, 180),
        "plain-small": ours_case("plain-small", 10_000, "files/s", 1000, 150),
    }
    numbers = [t.number for t in evaluate_targets(cases)]
    assert "1" not in numbers
    assert "6" not in numbers


def test_csv_no_regression_is_ninety_percent_of_the_old_ratios() -> None:
    amount = 1024 * MiB
    case = CaseSummary(
        "compressed-csv",
        "csv",
        "MB/s",
        [tool("ours", 4.0, amount, "MB/s", 200), tool(PIGZ, 4.2, amount, "MB/s"), tool(PIGZ_PIPE, 6.0, amount, "MB/s")],
        amount=amount,
    )
    targets = [t for t in evaluate_targets({"compressed-csv": case}) if t.number == "6"]
    alone, piped = targets[0], targets[1]
    assert alone.ratio == pytest.approx(1.05)
    assert alone.passed is True  # 1.05 >= 1.03
    assert piped.ratio == pytest.approx(1.5)
    assert piped.passed is False  # 1.50 < 1.52
    assert "compressed-csv" in render_table([case], targets)


def test_scale_selection_adds_the_middle_points_with_ours_alone() -> None:
    import run

    chosen = {case.name: case for case in run.select_cases(["scale"])}
    assert {"plain-small", "fetch-plain-small", "compressed-csv"} <= set(chosen)
    assert all(case.tools == ("ours",) for case in chosen.values())
    full = {case.name: case for case in run.select_cases(["plain-small,scale-publish"])}
    assert len(full["plain-small"].tools) > 1  # selected itself: every tool runs
    assert set(full) == {"plain-small", "scale-publish-lo", "scale-publish-hi"}
    assert [case.name for case in run.select_cases(["plain-small"])] == ["plain-small"]
    with pytest.raises(SystemExit, match="matches no case"):
        run.select_cases(["nope"])


def test_each_scaling_series_runs_as_one_group_after_the_other_cases() -> None:
    import run

    groups = [[case.name for case in group] for group in run.plan_groups(run.CASES)]
    assert groups[-3:] == [
        ["scale-publish-lo", "plain-small", "scale-publish-hi"],
        ["scale-fetch-lo", "fetch-plain-small", "scale-fetch-hi"],
        ["scale-csv-lo", "compressed-csv", "scale-csv-hi"],
    ]
    assert sorted(name for group in groups for name in group) == sorted(case.name for case in run.CASES)
    assert all(len(group) in (1, 3) for group in groups)
    # A series whose points are not all selected is not grouped.
    partial = run.plan_groups(run.select_cases(["plain-small,scale-publish-lo"]))
    assert [[case.name for case in group] for group in partial] == [["plain-small"], ["scale-publish-lo"]]


@pytest.mark.parametrize("warm", [True, False], ids=["warm-up", "no-warm-up"])
def test_a_case_starts_with_one_uncounted_run_of_its_first_tool(warm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import run
    from benchlib.runners import Outcome

    calls: list[tuple[str, str, int]] = []

    def fake_run_one(bench: object, case: run.Case, tool: str, data: object, rnd: int, *_: object) -> Outcome:
        calls.append((case.name, tool, rnd))
        return Outcome(ok=True, seconds=1.0)

    monkeypatch.setattr(run, "run_one", fake_run_one)
    monkeypatch.setattr(run.os, "sync", lambda: None)
    cases = [run.CASE_BY_NAME[name] for name in ("scale-publish-lo", "plain-small")]
    bench = run.Bench(
        server=None,  # type: ignore[arg-type]
        target=None,  # type: ignore[arg-type]
        admin=None,  # type: ignore[arg-type]
        workdir=Path("unused"),
        logs=Path("unused"),
        data={
            "small-lo": ds.Dataset("small-lo", Path("unused"), 1_000, 4_096_000, "1k"),
            "small": ds.Dataset("small", Path("unused"), 10_000, 40_960_000, "10k"),
        },
        binaries={},
        deadline=float("inf"),
        install=False,
        warm_up=warm,
    )
    monkeypatch.setattr(run.Bench, "clock", property(lambda self: type("Clock", (), {"rss": lambda _: None})()))
    results = run.run_group(bench, cases, runs=1)
    warm_ups = [call for call in calls if call[2] == -1]
    assert warm_ups == ([("plain-small", "ours", -1)] if warm else [])  # scale-* cases run on a warm server
    assert calls[: len(warm_ups)] == warm_ups  # before any counted run
    counted = [call for call in calls if call[2] != -1]
    assert len(counted) == 1 + len(run.CASE_BY_NAME["plain-small"].tools)
    assert [len(records) for records in results["plain-small"].values()] == [1] * len(cases[1].tools)
    assert all(record["round"] == 0 for record in bench.records)


def test_datasets_have_the_requested_files_in_100_folders_and_are_reused(tmp_path: Path) -> None:
    sizes = ds.Sizes(
        small_files=20,
        small_size=4096,
        big_size=MiB,
        medium_files=1,
        medium_size=MiB,
        csv_size=MiB,
        small_lo_files=5,
        small_hi_files=250,
        csv_lo_size=MiB // 2,
        csv_hi_size=3 * MiB,
    )
    made = ds.make_datasets(tmp_path, sizes, ["small-hi", "csv-hi"])
    small = made["small-hi"]
    assert (small.files, small.size) == ds.expected("small-hi", sizes) == (250, 250 * 4096)
    assert len([p for p in small.path.iterdir() if p.is_dir()]) == 100
    assert small.description == "250 files x 4 KiB random"
    csv = made["csv-hi"]
    text = csv.path.read_bytes()
    assert 3 * MiB - 200 < csv.size <= 3 * MiB
    assert text.endswith(b"\n")
    assert text.startswith(b"order_id,")
    first = sorted(small.path.rglob("*.bin"))[0]
    stamp = first.stat().st_mtime_ns
    again = ds.make_datasets(tmp_path, sizes, ["small-hi"])["small-hi"]
    assert again == small
    assert first.stat().st_mtime_ns == stamp  # reused, not written again
    changed = ds.make_datasets(tmp_path, ds.Sizes(**{**sizes.__dict__, "small_hi_files": 120}), ["small-hi"])
    assert changed["small-hi"].files == 120


def test_unknown_dataset_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'tiny'"):
        ds.params("tiny", ds.FULL)


def test_estimate_uses_the_last_run_and_sets_up_a_prefix_once(tmp_path: Path) -> None:
    plan = RunPlan("fetch-plain-small", "fetch-plain", "files/s", ("ours",), 10_000, 10_000 * 4096)
    nominal = case_seconds(plan, 3, {}, quiet_wait=0)
    latest = tmp_path / "latest.json"
    latest.write_text(
        json.dumps(
            {
                "mode": "quick",
                "started": "2026-12-01T00:00:00",
                "summaries": {"x": {"name": "fetch-plain-small", "tools": [{"tool": "ours", "throughput": 4000.0}]}},
            }
        )
    )
    rates, source = history_rates(latest)
    assert rates == {("fetch-plain-small", "ours"): 4000.0}
    assert "quick run" in source
    faster = case_seconds(plan, 3, rates, quiet_wait=0)
    assert faster < nominal
    # one setup publish for all rounds: a fourth round costs one more fetch, not another publish
    assert case_seconds(plan, 4, rates, quiet_wait=0) - faster == pytest.approx(
        faster - case_seconds(plan, 2, rates, 0)
    )
    assert history_rates(tmp_path / "missing.json") == ({}, "nominal (no earlier results)")
    assert estimate_minutes([plan], 3, [(10_000, 10_000 * 4096)], rates, quiet_wait=0) > faster / 60


def test_compile_bytecode_writes_what_a_child_imports_and_names_what_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from benchlib.runners import compile_bytecode

    package = tmp_path / "lazypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "engine.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")

    assert compile_bytecode(["lazypkg", "no_such_package_here"]) == ["no_such_package_here"]
    compiled = Path(importlib.util.cache_from_source(str(package / "engine.py")))
    assert compiled.is_file()
    assert compiled.stat().st_size > 0
