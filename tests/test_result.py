"""PublishedResult: the dict that goes to XCom and comes back as an S3 input source."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.result import PublishedResult, sha256_digest

DIGEST = hashlib.sha256(b"hello world\n").digest()
B64 = base64.b64encode(DIGEST).decode()


def test_dict_shape_is_bacalhaus() -> None:
    result = PublishedResult("b", "k.tar.gz", "us-west-2", "https://s3.us-west-2.amazonaws.com", "v1", B64)
    assert result.to_dict() == {
        "Type": "s3",
        "Params": {
            "Bucket": "b",
            "Key": "k.tar.gz",
            "Region": "us-west-2",
            "Endpoint": "https://s3.us-west-2.amazonaws.com",
            "VersionID": "v1",
            "ChecksumSHA256": B64,
        },
    }


def test_round_trip_of_the_dict() -> None:
    data = PublishedResult("b", "p/", "r", "http://h:1").to_dict()
    assert PublishedResult.from_dict(data).to_dict() == data


@given(
    st.builds(
        PublishedResult,
        bucket=st.text(min_size=1),
        key=st.text(min_size=1),
        region=st.text(),
        endpoint=st.text(),
        version_id=st.text(),
        checksum_sha256=st.sampled_from(["", B64, DIGEST.hex()]),
        filter=st.sampled_from(["", r"\.csv$"]),
    )
)
def test_round_trip_of_the_value(result: PublishedResult) -> None:
    assert PublishedResult.from_dict(result.to_dict()) == result


def test_input_source_spec_with_filter_and_any_case() -> None:
    spec = PublishedResult.from_dict({"bucket": "b", "KEY": "p/", "filter": r"\.csv$"})
    assert (spec.bucket, spec.key, spec.filter, spec.is_prefix) == ("b", "p/", r"\.csv$", True)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"Type": "ipfs", "Params": {"Bucket": "b", "Key": "k"}}, "'ipfs'"),
        ({"Params": {"Bucket": "b"}}, "needs both Bucket and Key"),
        ({"Params": {"Bucket": "b", "Key": "k", "Colour": "x"}}, "'Colour'"),
        ({"Params": {"Bucket": "b", "Key": "k", "Filter": "("}}, "Filter regex"),
        ({"Params": {"Bucket": "b", "Key": "k", "ChecksumSHA256": "nope"}}, "ChecksumSHA256 'nope'"),
        ({"Params": {"Bucket": "b", "Key": 3}}, "Key 3"),
    ],
)
def test_refused(data: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidSpecError, match=problem):
        PublishedResult.from_dict(data)


@pytest.mark.parametrize("text", [B64, DIGEST.hex(), "0x" + DIGEST.hex(), "0X" + DIGEST.hex().upper()])
def test_checksum_forms(text: str) -> None:
    assert sha256_digest(text) == DIGEST
