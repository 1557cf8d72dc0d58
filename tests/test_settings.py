"""PublishSettings: one validated value that publish(), the operators, the decorator and the CLI share."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from airflow_s3_publisher import S3PublishOperator
from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.options import ObjectOptions, TransferOptions
from airflow_s3_publisher.settings import PublishSettings


def test_explicit_compress_false_overrides_a_publisher_that_compresses() -> None:
    settings = PublishSettings.build(publisher="s3://bucket/out,opt=compress=true", compress=False)
    assert settings.spec().compress is False


def test_explicit_compress_true_overrides_a_publisher_that_does_not() -> None:
    settings = PublishSettings.build(
        publisher={"Type": "s3", "Params": {"Bucket": "bucket", "Key": "k"}}, compress=True
    )
    assert settings.spec().compress is True


def test_compress_not_given_takes_the_publishers() -> None:
    assert PublishSettings.build(publisher="s3://bucket/out,opt=compress=true").spec().compress is True
    assert PublishSettings.build(publisher="s3://bucket/out").spec().compress is False


def test_object_option_names_go_into_object_options() -> None:
    settings = PublishSettings.build(bucket="bucket", key="k", metadata={"team": "data"}, storage_class="STANDARD_IA")
    assert settings.object_options == ObjectOptions(metadata={"team": "data"}, storage_class="STANDARD_IA")


def test_build_on_a_base_keeps_what_is_not_given() -> None:
    base = PublishSettings.build(bucket="bucket", key="k", manifest=True, transfer=TransferOptions(concurrency=2))
    changed = PublishSettings.build(base, key="other")
    assert (changed.bucket, changed.key, changed.manifest, changed.transfer) == (
        "bucket",
        "other",
        True,
        TransferOptions(concurrency=2),
    )


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (
            {"bucket": "bucket", "key": "k", "colour": "red"},
            r"unknown publish setting 'colour'; valid ones are .*bucket",
        ),
        ({"bucket": "bucket", "key": "k", "manifest": "yes"}, "manifest must be True or False, not 'yes'"),
        ({"bucket": "bucket", "key": "k", "transfer": {"concurrency": 2}}, "transfer must be a TransferOptions"),
        ({"bucket": "bucket", "key": "k", "compression_level": 10}, "compression_level must be an integer"),
        ({"bucket": "bucket"}, "no key given"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(given: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidSpecError, match=problem):
        PublishSettings.build(**given)


def test_templated_values_are_checked_only_once_rendered() -> None:
    settings = PublishSettings.build(bucket="{{ params.bucket }}", key="runs/{jobID}")
    with pytest.raises(InvalidSpecError, match="invalid bucket name"):
        PublishSettings.build(settings, bucket="Not_Valid").spec()


def test_the_operator_signature_is_the_settings() -> None:
    """Every setting the operator takes is a PublishSettings or ObjectOptions field, with the same default."""
    parameters = inspect.signature(S3PublishOperator.__init__).parameters
    taken = {name for name in parameters if PublishSettings.accepts(name)}
    own = set(PublishSettings.field_names()) - {"object_options"}
    objects = {f.name for f in dataclasses.fields(ObjectOptions)}
    assert taken == own | objects
    defaults = PublishSettings.build(bucket="bucket", key="k")
    for name in own - {"bucket", "key"}:
        assert parameters[name].default == getattr(defaults, name), name
