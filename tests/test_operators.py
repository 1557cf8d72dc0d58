"""The operators as a DAG author meets them: parse-time validation and templating."""

from __future__ import annotations

import pytest
from airflow.sdk import DAG

from airflow_s3_publisher import InvalidSpecError, S3FetchOperator, S3PublishOperator


def make(**kwargs: object) -> S3PublishOperator:
    with DAG("parse_test", schedule=None):
        return S3PublishOperator(task_id="publish", source="/data/out", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"bucket": "Bad_Bucket", "key": "k"}, "invalid bucket name 'Bad_Bucket'"),
        ({"bucket": "bucket", "key": "r/{jobid}"}, r"unknown placeholder \{jobid\}"),
        ({"bucket": "bucket", "key": "k", "endpoint": "localhost:9000"}, "invalid endpoint 'localhost:9000'"),
        ({"publisher": "s3://bucket/k,opt=colour=red"}, "unknown publisher option 'colour'"),
        ({"publisher": {"Type": "s3", "Params": {"Bucket": "bucket"}}}, "no key given"),
        ({"bucket": "bucket"}, "no key given"),
        ({"bucket": "bucket", "key": "k", "compress": "maybe"}, "invalid compress value 'maybe'"),
        ({"bucket": "bucket", "key": "/k"}, "must not start with '/'"),
        ({"bucket": "bucket", "key": "a/../b"}, "has a '..' segment"),
        ({"publisher": "s3://bucket/runs/./{jobID}"}, "has a '.' segment"),
        ({"bucket": "bucket", "key": "k" * 1100}, "1100 bytes before its placeholders are filled in"),
        ({"bucket": "bucket", "key": "k", "compression_level": 42}, "compression_level must be an integer"),
    ],
)
def test_bad_settings_fail_when_the_dag_is_parsed(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidSpecError, match=problem):
        make(**kwargs)


def test_templated_values_wait_for_rendering() -> None:
    op = make(bucket="{{ params.bucket }}", key="{{ ds_nodash }}/{jobID}", endpoint="{{ var.value.endpoint }}")
    assert op.bucket == "{{ params.bucket }}"


def test_every_string_setting_is_templated() -> None:
    assert set(S3PublishOperator.template_fields) >= {
        "source",
        "bucket",
        "key",
        "endpoint",
        "region",
        "compress",
        "publisher",
        "aws_conn_id",
    }
    assert set(S3FetchOperator.template_fields) >= {"source", "destination", "filter", "aws_conn_id"}


def test_default_compress_does_not_override_the_publisher() -> None:
    assert make(publisher="s3://bucket/k,opt=compress=true").compress is None
    assert make(publisher="s3://bucket/k", compress=True).compress is True


def test_explicit_compress_false_overrides_the_publisher() -> None:
    op = make(publisher="s3://bucket/k,opt=compress=true", compress=False)
    assert op.compress is False
    assert op.settings.spec().compress is False
