"""safe_join: an archive member's path mapped below the destination, or refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_s3_publisher.exceptions import UnsafeArchiveError
from airflow_s3_publisher.paths import safe_join

# --------------------------------------------------------------------------------------------------
# safe_join


def test_safe_join_maps_under_destination(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b/c.csv") == tmp_path / "a" / "b" / "c.csv"
    assert safe_join(tmp_path, "日本/ファイル.txt") == tmp_path / "日本" / "ファイル.txt"
    assert safe_join(tmp_path, "..hidden/x..y") == tmp_path / "..hidden" / "x..y"


@pytest.mark.parametrize(
    "relpath",
    [
        "",
        "/etc/passwd",
        "//x",
        "../x",
        "a/../../x",
        "a/..",
        "..",
        ".",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "\\x",
        "\\\\server\\share",
        "..\\x",
        "a/..\\..\\x",
        "a\\..",
        "a\x00b",
    ],
)
def test_safe_join_refuses(tmp_path: Path, relpath: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        safe_join(tmp_path, relpath)


def _check_safe_join(destination: Path, text: str) -> None:
    try:
        path = safe_join(destination, text)
    except UnsafeArchiveError:
        return
    normalized = Path(os.path.normpath(path))
    assert normalized == path  # no "." or ".." left to resolve
    assert normalized != destination
    assert os.path.commonpath([normalized, destination]) == str(destination)
    assert path.relative_to(destination).as_posix() == text  # a faithful mapping, not a rewrite


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_safe_join_never_leaves_destination(text: str) -> None:
    _check_safe_join(Path("/srv/staging"), text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "\x00", "é", "..a", " "]), max_size=8).map("".join))
def test_safe_join_never_leaves_destination_tricky(text: str) -> None:
    _check_safe_join(Path("/srv/staging"), text)
