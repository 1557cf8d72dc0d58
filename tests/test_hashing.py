"""Digests computed while bytes pass through: whole streams and the parts of a multipart upload."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_s3_publisher.hashing import PartHashes


@given(
    data=st.binary(max_size=300),
    part_size=st.integers(min_value=1, max_value=64),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
)
def test_part_hashes_follow_part_boundaries_whatever_the_chunks(data: bytes, part_size: int, cuts: list[int]) -> None:
    hashes = PartHashes(part_size)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        hashes.update(memoryview(data)[start:end])
    expected = [hashlib.sha256(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)]
    assert hashes.digests() == expected


def test_part_hashes_refuse_a_part_size_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="part_size must be positive, not 0"):
        PartHashes(0)
