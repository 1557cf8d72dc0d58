"""Key rendering: placeholders, suffix rules, S3 key constraints."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.naming import (
    PLACEHOLDERS,
    RunInfo,
    apply_suffix,
    render_key,
    sanitize_run_id,
    validate_key,
)

RUN = RunInfo(
    dag_id="etl",
    task_id="publish",
    run_id="manual__2023-09-26T14:05:30+00:00",
    execution_id="0190a1b2-0000-7000-8000-000000000001",
    map_index=3,
    try_number=2,
)
NOW = datetime(2023, 9, 26, 14, 5, 30, tzinfo=UTC)


def test_spec_example() -> None:
    run = RunInfo(dag_id="abc123", run_id="x")
    key = render_key("results/{jobID}/{date}/{time}/", compress=False, run=run, now=NOW)
    assert key == "results/abc123__x/20230926/140530/"


@pytest.mark.parametrize(
    ("placeholder", "expected"),
    [
        ("{jobID}", "etl__manual__2023-09-26T14-05-30-00-00"),
        ("{executionID}", "0190a1b2-0000-7000-8000-000000000001"),
        ("{date}", "20230926"),
        ("{time}", "140530"),
        ("{dagID}", "etl"),
        ("{taskID}", "publish"),
        ("{runID}", "manual__2023-09-26T14-05-30-00-00"),
        ("{mapIndex}", "3"),
        ("{tryNumber}", "2"),
    ],
)
def test_each_placeholder(placeholder: str, expected: str) -> None:
    assert render_key(f"a/{placeholder}", compress=False, run=RUN, now=NOW) == f"a/{expected}/"


def test_node_id_is_the_host_name() -> None:
    assert render_key("{nodeID}", compress=False, now=NOW) == socket.gethostname() + "/"


def test_date_and_time_are_utc_from_one_reading() -> None:
    # 23:59:59.9 in UTC-5 is 04:59:59 the next day in UTC.
    local = datetime(2024, 12, 31, 23, 59, 59, 900000, tzinfo=timezone(timedelta(hours=-5)))
    assert render_key("{date}-{time}", compress=True, now=local) == "20250101-045959.tar.gz"


def test_placeholders_replaced_everywhere() -> None:
    assert render_key("{dagID}/{dagID}", compress=False, run=RUN, now=NOW) == "etl/etl/"


@pytest.mark.parametrize(
    ("template", "compress", "expected"),
    [
        ("results/x", True, "results/x.tar.gz"),
        ("results/x.tar.gz", True, "results/x.tar.gz"),
        ("results/x.TGZ", True, "results/x.TGZ.tar.gz"),
        ("results/x", False, "results/x/"),
        ("results/x/", False, "results/x/"),
        ("results/x.tar.gz", False, "results/x.tar.gz/"),
    ],
)
def test_suffix_rules(template: str, compress: bool, expected: str) -> None:
    assert apply_suffix(template, compress) == expected


def test_run_id_sanitised() -> None:
    assert sanitize_run_id("scheduled__2024-01-01T00:00:00+00:00 x/y") == "scheduled__2024-01-01T00-00-00-00-00-x-y"


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(InvalidSpecError, match=r"unknown placeholder \{jobid\}.*Did you mean \{jobID\}"):
        render_key("r/{jobid}", compress=False, now=NOW)


def test_placeholder_needing_the_run_fails_clearly_without_it() -> None:
    with pytest.raises(InvalidSpecError, match=r"\{jobID\}.*needs the Airflow run context"):
        render_key("r/{jobID}", compress=False, now=NOW)


def test_context_free_placeholders_work_without_a_run() -> None:
    assert render_key("r/{date}", compress=False, now=NOW) == "r/20230926/"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty key"),
        ("/abs/key", "must not start with '/'"),
        ("a/../b", "'..' segment"),
        ("a/./b", "'.' segment"),
        ("..", "'..' segment"),
        ("a\nb", "control character"),
        ("a\x00b", "control character"),
        ("a\x7fb", "control character"),
        ("k" * 1025, "1025 bytes"),
        ("é" * 513, "1026 bytes"),
    ],
)
def test_invalid_keys(key: str, problem: str) -> None:
    with pytest.raises(InvalidSpecError, match=problem):
        validate_key(key)


def test_key_over_limit_only_once_rendered() -> None:
    template = "x" * 1000 + "/{executionID}"
    with pytest.raises(InvalidSpecError, match="once rendered"):
        render_key(template, compress=False, run=RUN, now=NOW)


def test_run_info_from_an_airflow_3_context_without_logical_date() -> None:
    ti = SimpleNamespace(
        dag_id="d",
        task_id="t",
        run_id="manual__2026-11-25T11:46:40.147346+00:00_bShfuzKm",
        id="uuid-1",
        map_index=-1,
        try_number=1,
    )
    # Airflow 3 leaves ds, ts and logical_date out of the context for such runs.
    context = {"ti": ti, "run_id": ti.run_id, "dag_run": SimpleNamespace(run_id=ti.run_id, dag_id="d")}
    run = RunInfo.from_context(context)
    key = render_key("{jobID}/{executionID}/{mapIndex}/{tryNumber}", compress=True, run=run, now=NOW)
    assert key == "d__manual__2026-11-25T11-46-40.147346-00-00_bShfuzKm/uuid-1/-1/1.tar.gz"


def test_every_placeholder_is_documented_and_renders() -> None:
    template = "/".join("{" + name + "}" for name in PLACEHOLDERS)
    key = render_key(template, compress=False, run=RUN, now=NOW)
    assert "{" not in key
    assert key.count("/") == len(PLACEHOLDERS)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80), st.booleans())
def test_any_template_renders_to_a_valid_key_or_raises_our_error(template: str, compress: bool) -> None:
    try:
        key = render_key(template, compress=compress, run=RUN, now=NOW)
    except InvalidSpecError:
        return
    assert validate_key(key) == key
    assert key.endswith(".tar.gz" if compress else "/")
