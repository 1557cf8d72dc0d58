"""Publisher specs in both of Bacalhau's forms, and every way they can be wrong."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.spec import (
    PublisherSpec,
    build_publisher_spec,
    check_static_settings,
    parse_publisher,
    redact_url,
    validate_bucket,
    validate_endpoint,
)


class TestImperativeForm:
    def test_bucket_and_key_from_uri(self) -> None:
        assert parse_publisher("s3://myBucket/dir/file-001.txt") == {"bucket": "myBucket", "key": "dir/file-001.txt"}

    def test_options_with_opt_and_option(self) -> None:
        spec = build_publisher_spec(
            "s3://bucket/key,opt=endpoint=http://127.0.0.1:9000,option=region=us-east-1,opt=compress=true"
        )
        assert spec == PublisherSpec("bucket", "key", "http://127.0.0.1:9000", "us-east-1", True)

    def test_option_value_split_at_first_equals(self) -> None:
        assert parse_publisher("s3://b/k,opt=key=a=b=c")["key"] == "a=b=c"

    def test_option_names_are_case_insensitive(self) -> None:
        assert parse_publisher("s3://b/k,opt=Region=eu-west-1")["region"] == "eu-west-1"

    def test_non_uri_form(self) -> None:
        spec = build_publisher_spec("s3,opt=bucket=my-bucket,opt=key=dir/file.txt,opt=region=us-east-1")
        assert (spec.bucket, spec.key, spec.region) == ("my-bucket", "dir/file.txt", "us-east-1")

    def test_explicit_options_override_uri(self) -> None:
        assert build_publisher_spec("s3://one/k,opt=bucket=two").bucket == "two"

    def test_key_keeps_question_mark_and_hash(self) -> None:
        # Bacalhau loses these to URL parsing; S3 allows them in keys.
        assert build_publisher_spec("s3://bucket/a?b#c").key == "a?b#c"

    def test_encoding_spelling(self) -> None:
        assert build_publisher_spec("s3://bucket/k,opt=encoding=gzip").compress is True
        assert build_publisher_spec("s3://bucket/k,opt=encoding=plain").compress is False

    @pytest.mark.parametrize(
        ("value", "named"),
        [
            ("", "empty publisher"),
            ("s3://bucket/key,opt=colour=blue", "'colour'"),
            ("s3://bucket/key,y=/mount/path", "'y=/mount/path'"),
            ("s3://bucket/key,stray", "'stray'"),
            ("ipfs://bucket/key", "'ipfs'"),
            ("s3://bucket/key,opt=compress=yes", "'yes'"),
            ("s3://bucket/key,opt=encoding=zip", "'zip'"),
            ("s3://bucket/key,opt=compress=true,opt=encoding=plain", "disagree"),
            ("s3://bucket", "no key"),
            ("s3:///key", "no bucket"),
            ("s3://bucket/key,opt==x", "opt==x"),
        ],
    )
    def test_refused(self, value: str, named: str) -> None:
        with pytest.raises(InvalidSpecError, match=named.replace("?", r"\?")):
            build_publisher_spec(value)


class TestDeclarativeForm:
    def test_title_case(self) -> None:
        spec = build_publisher_spec(
            {"Type": "s3", "Params": {"Bucket": "my-task-results", "Key": "task123/result.tar.gz", "Compress": True}}
        )
        assert spec == PublisherSpec("my-task-results", "task123/result.tar.gz", compress=True)

    def test_lower_and_upper_case_names(self) -> None:
        spec = build_publisher_spec({"type": "S3 ", "params": {"BUCKET": "bkt", "key": "k", "ENDPOINT": "http://h:1"}})
        assert (spec.bucket, spec.key, spec.endpoint) == ("bkt", "k", "http://h:1")

    def test_bare_params_dict(self) -> None:
        assert build_publisher_spec({"Bucket": "bkt", "Key": "k"}).bucket == "bkt"

    def test_compress_as_string(self) -> None:
        assert build_publisher_spec({"Params": {"Bucket": "bkt", "Key": "k", "Compress": "TRUE"}}).compress

    def test_keyword_arguments_win(self) -> None:
        spec = build_publisher_spec({"Params": {"Bucket": "bkt", "Key": "k"}}, bucket="other", compress=True)
        assert (spec.bucket, spec.compress) == ("other", True)

    @pytest.mark.parametrize(
        ("value", "named"),
        [
            ({"Type": "ipfs", "Params": {"Bucket": "bkt", "Key": "k"}}, "'ipfs'"),
            ({"Type": "s3", "Params": None}, "params"),
            ({"Type": "s3", "Params": {"Bucket": "bkt", "Key": "k", "Acl": "x"}}, "'Acl'"),
            ({"Type": "s3", "Params": {"Bucket": "bkt", "Key": "k", "Compress": 1}}, "compress value 1"),
            ({"Type": "s3", "Params": {"Bucket": "bkt"}}, "no key"),
            ({"Type": "s3", "Params": {"Key": "k"}}, "no bucket"),
            ({"Type": "s3", "Params": {"Bucket": 7, "Key": "k"}}, "bucket 7"),
        ],
    )
    def test_refused(self, value: dict[str, object], named: str) -> None:
        with pytest.raises(InvalidSpecError, match=named):
            build_publisher_spec(value)

    def test_wrong_type_of_publisher(self) -> None:
        with pytest.raises(InvalidSpecError, match="list"):
            parse_publisher([1, 2])  # type: ignore[arg-type]


class TestBucketNames:
    @pytest.mark.parametrize("name", ["abc", "my-bucket", "my.bucket.2", "a" * 63, "0bucket9"])
    def test_valid(self, name: str) -> None:
        assert validate_bucket(name) == name

    @pytest.mark.parametrize(
        ("name", "problem"),
        [
            ("ab", "2 characters"),
            ("a" * 64, "64 characters"),
            ("MyBucket", "'B', 'M'"),
            ("my_bucket", "'_'"),
            ("-bucket", "start and end"),
            ("bucket.", "start and end"),
            ("my..bucket", "'..'"),
            ("192.168.5.4", "IP address"),
            ("xn--bucket", "reserves"),
            ("bucket-s3alias", "reserves"),
        ],
    )
    def test_invalid_names_the_value(self, name: str, problem: str) -> None:
        with pytest.raises(InvalidSpecError, match=problem) as err:
            validate_bucket(name)
        assert repr(name) in str(err.value)


class TestEndpoints:
    @pytest.mark.parametrize(
        ("value", "normalised"),
        [
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("https://s3.us-west-2.amazonaws.com/", "https://s3.us-west-2.amazonaws.com"),
            ("http://[::1]:8333", "http://[::1]:8333"),
        ],
    )
    def test_valid(self, value: str, normalised: str) -> None:
        assert validate_endpoint(value) == normalised

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("127.0.0.1:9000", "scheme"),
            ("s3.amazonaws.com", "scheme"),
            ("ftp://host", "scheme"),
            ("http://host/bucket", "path"),
            ("http://host?x=1", "path, query"),
            ("http://:9000", "no host"),
            ("http://host:99999", "(?i)port"),
        ],
    )
    def test_invalid(self, value: str, problem: str) -> None:
        with pytest.raises(InvalidSpecError, match=problem):
            validate_endpoint(value)

    def test_credentials_in_endpoint_are_refused_and_never_shown(self) -> None:
        with pytest.raises(InvalidSpecError, match="credentials") as err:
            build_publisher_spec("s3://bucket/k,opt=endpoint=http://AKIDEXAMPLE:s3cr3t-P4ss@host:9000")
        assert "s3cr3t-P4ss" not in str(err.value)
        assert "AKIDEXAMPLE" not in str(err.value)

    def test_redact(self) -> None:
        assert redact_url("http://user:pw@host:1/x") == "http://***@host:1/x"


class TestParseTimeChecks:
    def test_static_values_checked(self) -> None:
        with pytest.raises(InvalidSpecError, match="Bad_Bucket"):
            check_static_settings(None, bucket="Bad_Bucket", key="k")

    def test_templated_values_skipped(self) -> None:
        check_static_settings(None, bucket="{{ var.value.bucket }}", key="{{ ds }}/x")

    def test_static_value_beside_templated_one_still_checked(self) -> None:
        with pytest.raises(InvalidSpecError, match="unknown placeholder"):
            check_static_settings(None, bucket="{{ var.value.bucket }}", key="x/{job_id}")

    def test_templated_publisher_string_skipped(self) -> None:
        check_static_settings("s3://{{ var.value.bucket }}/k")

    def test_dict_with_one_templated_param_checks_the_rest(self) -> None:
        with pytest.raises(InvalidSpecError, match="scheme"):
            check_static_settings({"Params": {"Bucket": "{{ b }}", "Key": "k", "Endpoint": "host:1"}})

    def test_missing_key_found_at_parse_time(self) -> None:
        with pytest.raises(InvalidSpecError, match="no key"):
            check_static_settings({"Params": {"Bucket": "{{ b }}"}})

    def test_missing_bucket_unknown_while_publisher_templated(self) -> None:
        check_static_settings("{{ var.value.publisher }}", key="k")


# --- properties -------------------------------------------------------------------------------

_text = st.text(alphabet=string.printable + "é{}=,\"'/", max_size=40)
_names = st.sampled_from(["bucket", "key", "endpoint", "region", "compress", "encoding", "Bucket", "colour"])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _text,
        st.lists(st.tuples(st.sampled_from(["opt", "option", "x"]), _names, _text)).map(
            lambda opts: "s3://bkt/key," + ",".join(f"{f}={n}={v}" for f, n, v in opts)
        ),
    )
)
def test_any_uri_parses_or_raises_our_error(text: str) -> None:
    try:
        spec = build_publisher_spec(text)
    except InvalidSpecError:
        return
    assert isinstance(spec, PublisherSpec)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(_names, _text), st.one_of(_text, st.booleans(), st.none(), st.integers())))
def test_any_dict_parses_or_raises_our_error(params: dict[str, object]) -> None:
    for value in (params, {"Type": "s3", "Params": params}):
        try:
            build_publisher_spec(value)
        except InvalidSpecError:
            continue


_bucket = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
_key = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="{}\x7f"), min_size=1, max_size=60
).filter(lambda k: not k.startswith("/") and k.strip() == k)


@settings(max_examples=300, deadline=None)
@given(
    _bucket,
    _key,
    st.sampled_from(["", "http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com"]),
    st.sampled_from(["", "us-east-1", "auto"]),
    st.booleans(),
)
def test_uri_round_trip(bucket: str, key: str, endpoint: str, region: str, compress: bool) -> None:
    try:
        spec = build_publisher_spec(
            bucket=bucket, key=key, endpoint=endpoint or None, region=region or None, compress=compress
        )
    except InvalidSpecError:
        return
    assert build_publisher_spec(spec.to_uri()) == spec
    assert build_publisher_spec(spec.to_dict()) == spec
