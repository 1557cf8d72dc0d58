"""The gzip backends (isal, zlib-ng, zlib) and compression levels."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from airflow_s3_publisher import compression
from airflow_s3_publisher.archive import write_tar_gz
from airflow_s3_publisher.compression import gzip_backend
from airflow_s3_publisher.exceptions import InvalidSpecError

# --------------------------------------------------------------------------------------------------
# gzip backends and levels


def test_backend_names_and_level_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    by_name = {b.name: b for b in compression._load_backends()}
    assert list(by_name)[-1] == "zlib"
    expected = {
        "isal": {None: 1, 1: 1, 2: 2, 3: 3, 6: 3, 9: 3},
        "zlib-ng": {None: 2, 1: 1, 6: 6, 9: 9},
        "zlib": {None: 1, 1: 1, 6: 6, 9: 9},
    }
    for name, levels in expected.items():
        if name not in by_name:
            continue
        monkeypatch.setattr(compression, "_BACKENDS", (by_name[name],))
        for level, native in levels.items():
            assert gzip_backend(level) == f"{name} level {native}"
        assert gzip_backend(0) == "zlib level 0"  # store is always stdlib zlib


def test_fallback_to_stdlib_when_no_fast_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "isal", None)  # makes "import isal" raise ImportError
    monkeypatch.setitem(sys.modules, "zlib_ng", None)
    assert [b.name for b in compression._load_backends()] == ["zlib"]


def test_isal_preferred_when_installed() -> None:
    pytest.importorskip("isal.isal_zlib")
    assert compression._load_backends()[0].name == "isal"


@pytest.mark.parametrize("level", [-1, 10, True, 1.5, "1"])
def test_invalid_compression_level(tmp_path: Path, level: object) -> None:
    with pytest.raises(InvalidSpecError, match="compression_level"):
        gzip_backend(level)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError):
        write_tar_gz([], io.BytesIO(), compression_level=level)  # type: ignore[arg-type]
