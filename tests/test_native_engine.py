"""The native request engine (obstore) against a real SeaweedFS: what it sends, what it refuses, how it fails.

Requests are watched on the wire through tests/storeproxy.py (a pass-through proxy that records every
head, can refuse requests as stricter stores do, and can flip a body byte) and tests/faultproxy.py
(503s, resets, hangs). What was stored is always read back with boto3, straight from SeaweedFS.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials

import airflow_s3_publisher.s3.native as native
import airflow_s3_publisher.s3.native.failures as native_failures
from airflow_s3_publisher.exceptions import InvalidSpecError, S3RequestError
from airflow_s3_publisher.options import MiB, TransferOptions
from airflow_s3_publisher.s3.client import S3Client, connect
from airflow_s3_publisher.s3.engine import BotoEngine, EngineUnavailable, select_engine
from airflow_s3_publisher.s3.native import NativeEngine
from airflow_s3_publisher.s3.objects import GetRequest, GetResult, PutJob, PutRequest, UploadResult
from tests.faultproxy import RESET, SLOWDOWN, running_proxy
from tests.storeproxy import Refusal, Seen, StoreProxy, refuse_checksum_headers, self_signed_tls, virtual_host_only
from tests.support import use_connection
from tools.seaweed import ADMIN, WRITE_ONLY_BUCKET, WRITER, Identity, SeaweedServer
from tools.stores import virtual_host_seaweed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client as BotoS3Client

pytestmark = pytest.mark.timeout(120)

REGION = "us-east-1"
VHOST_DOMAIN = "vhost.localhost"


# ------------------------------------------------------------------------------------------ helpers


def session_for(identity: Identity, token: str | None = None) -> boto3.Session:
    """A boto3 session with exactly this identity's keys (nothing from the environment)."""
    return boto3.session.Session(
        aws_access_key_id=identity.access_key,
        aws_secret_access_key=identity.secret_key,
        aws_session_token=token,
        region_name=REGION,
    )


def client_for(
    endpoint: str,
    identity: Identity = ADMIN,
    *,
    session: boto3.Session | None = None,
    style: str = "path",
    region: str = REGION,
    verify: bool | str | None = None,
    **options: Any,
) -> S3Client:
    """An S3Client as connect() builds one from an Airflow connection, without the connection."""
    session = session or session_for(identity)
    raw = session.client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region,
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}),
        verify=verify,
    )
    return S3Client(
        raw=raw,
        endpoint=endpoint,
        region=region,
        options=TransferOptions(**options),
        session=session,
        addressing_style=style,
        verify=verify,
    )


def engine_for(
    endpoint: str, identity: Identity = ADMIN, *, concurrency: int | None = None, **kwargs: Any
) -> NativeEngine:
    """The native engine for :func:`client_for`'s client."""
    return NativeEngine.create(client_for(endpoint, identity, **kwargs), concurrency=concurrency)


def put_job(key: str, data: bytes, **args: Any) -> PutJob:
    """A job as a plain publish makes one: it 'reads' the bytes and hashes them."""
    return PutJob(len(data), lambda: PutRequest(key, data, hashlib.sha256(data).digest(), args))


def get_all(
    engine: NativeEngine, bucket: str, requests: list[GetRequest], on_bytes: Callable[[int], None] = lambda n: None
) -> list[GetResult]:
    done: list[GetResult] = []
    engine.get_many(bucket, requests, on_bytes, done.append)
    return done


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put_all(
    engine: NativeEngine | BotoEngine, bucket: str, objects: dict[str, bytes], **args: Any
) -> list[UploadResult]:
    stored: list[UploadResult] = []
    results = engine.put_many(bucket, [put_job(k, v, **args) for k, v in objects.items()], stored.append)
    assert sorted(r.key for r in stored) == sorted(r.key for r in results)
    return results


@pytest.fixture
def engine(seaweed: SeaweedServer) -> Iterator[NativeEngine]:
    """An engine for the ADMIN identity, straight to SeaweedFS, path-style, default TransferOptions."""
    with engine_for(seaweed.endpoint) as made:
        yield made


@pytest.fixture
def recorder(seaweed: SeaweedServer) -> Iterator[StoreProxy]:
    """A pass-through proxy in front of SeaweedFS that records every request head."""
    with StoreProxy(seaweed.endpoint, lambda request: None) as proxy:
        yield proxy


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_failures, "BACKOFF_BASE", 0.01)


def signed_headers(seen: Seen) -> set[str]:
    match = re.search(r"SignedHeaders=([^,]+)", seen.headers.get("authorization", ""))
    assert match, seen.headers
    return set(match.group(1).split(";"))


def scope_region(seen: Seen) -> str:
    match = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request", seen.headers.get("authorization", ""))
    assert match, seen.headers
    return match.group(1)


# ------------------------------------------------------------------------------------------ round trips


def test_round_trip_stores_exact_bytes_with_their_checksum(
    engine: NativeEngine, s3_admin: BotoS3Client, bucket: str, tmp_path: Path
) -> None:
    objects = {
        "run/empty.txt": b"",
        "run/one byte": b"x",
        "run/dir/small+plus%20pct é.bin": bytes(range(256)) * 16,
        "run/dir/big.bin": hashlib.sha256(b"seed").digest() * (3 * MiB // 32 + 5),  # streamed on the way back
        "run/#hash?query~tilde": b"odd characters in a key",
    }
    results = put_all(engine, bucket, objects, ContentType="application/octet-stream")
    assert {r.key: (r.size, r.sha256) for r in results} == {
        k: (len(v), hashlib.sha256(v).digest()) for k, v in objects.items()
    }
    for key, data in objects.items():
        stored = s3_admin.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert stored["Body"].read() == data
        assert stored["ChecksumSHA256"] == b64_sha256(data)
        assert stored["ETag"] == next(r.etag for r in results if r.key == key)

    counted: list[int] = []
    lock = threading.Lock()

    def on_bytes(n: int) -> None:
        with lock:
            counted.append(n)

    requests = [GetRequest(key, tmp_path / f"f{n}") for n, key in enumerate(objects)]
    got = get_all(engine, bucket, requests, on_bytes)
    assert {g.request.key: (g.size, g.sha256) for g in got} == {
        k: (len(v), hashlib.sha256(v).digest()) for k, v in objects.items()
    }
    for request in requests:
        assert request.path.read_bytes() == objects[request.key]
    assert sum(counted) == sum(len(v) for v in objects.values())


def test_versions_are_returned_and_pinned_downloads_get_them(
    engine: NativeEngine, s3_admin: BotoS3Client, versioned_bucket: str, tmp_path: Path
) -> None:
    first = put_all(engine, versioned_bucket, {"k": b"first"})[0]
    second = put_all(engine, versioned_bucket, {"k": b"second"})[0]
    versions = s3_admin.list_object_versions(Bucket=versioned_bucket, Prefix="k")["Versions"]
    assert {first.version_id, second.version_id} == {v["VersionId"] for v in versions}
    assert first.version_id != second.version_id
    get_all(engine, versioned_bucket, [GetRequest("k", tmp_path / "old", version_id=first.version_id)])
    assert (tmp_path / "old").read_bytes() == b"first"


def test_one_put_per_object_with_the_sha256_header_and_nothing_else(
    seaweed: SeaweedServer, recorder: StoreProxy, bucket: str
) -> None:
    objects = {f"p/{n}": bytes([n]) * (n * 1000) for n in range(1, 13)}
    with engine_for(recorder.endpoint) as engine:
        put_all(engine, bucket, objects)
    seen = recorder.requests()
    assert sorted(s.target for s in seen) == sorted(f"/{bucket}/p/{n}" for n in range(1, 13))
    assert {s.method for s in seen} == {"PUT"}  # no HEAD, no multipart, no listing
    for request in seen:
        data = objects[request.target.split("/", 2)[2]]
        assert request.headers["x-amz-checksum-sha256"] == b64_sha256(data)
        assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"  # hashed once, for the checksum
        assert "x-amz-checksum-sha256" in signed_headers(request)
        assert scope_region(request) == REGION


def test_a_body_changed_in_transit_is_refused_by_the_store_and_not_stored(
    seaweed: SeaweedServer, s3_admin: BotoS3Client, bucket: str
) -> None:
    def flip_last_byte(request: Seen, body: bytes) -> bytes:
        return body[:-1] + bytes([body[-1] ^ 1])

    with (
        StoreProxy(seaweed.endpoint, lambda request: None, tamper=flip_last_byte) as proxy,
        engine_for(proxy.endpoint) as engine,
        pytest.raises(S3RequestError) as caught,
    ):
        put_all(engine, bucket, {"tampered": b"payload that S3 must refuse"})
    err = caught.value
    assert (err.code, err.status, err.operation, err.key) == ("BadDigest", 400, "PutObject", "tampered")
    assert "do not match the SHA-256 that was sent" in str(err)
    assert s3_admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_object_options_reach_the_store(engine: NativeEngine, s3_admin: BotoS3Client, bucket: str) -> None:
    put_all(
        engine,
        bucket,
        {"opts/report.csv": b"a,b\n1,2\n"},
        ContentType="text/csv",
        Metadata={"sha256": "ab" * 32, "airflow-dag-id": "my_dag"},
        Tagging="team=data&stage=raw value",
        StorageClass="STANDARD_IA",
        ServerSideEncryption="AES256",
        CacheControl="no-cache",
    )
    head = s3_admin.head_object(Bucket=bucket, Key="opts/report.csv")
    assert head["ContentType"] == "text/csv"
    assert head["Metadata"] == {"sha256": "ab" * 32, "airflow-dag-id": "my_dag"}
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["CacheControl"] == "no-cache"
    tags = s3_admin.get_object_tagging(Bucket=bucket, Key="opts/report.csv")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "data", "stage": "raw value"}


def test_kms_and_expected_bucket_owner_are_signed_headers(seaweed: SeaweedServer, bucket: str) -> None:
    """SeaweedFS has no KMS: the proxy answers itself, after recording what AWS would have received."""

    def refuse(request: Seen) -> Refusal:
        return Refusal(403, "AccessDenied", "Access Denied")

    with StoreProxy(seaweed.endpoint, refuse) as proxy, engine_for(proxy.endpoint) as engine:
        with pytest.raises(S3RequestError) as caught:
            put_all(
                engine,
                bucket,
                {"kms/x": b"x"},
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId="alias/results",
                ExpectedBucketOwner="123456789012",
            )
        with pytest.raises(S3RequestError):
            get_all(engine, bucket, [GetRequest("kms/x", Path("unused"), args={"ExpectedBucketOwner": "123456789012"})])
    put, get = proxy.requests()
    assert put.headers["x-amz-server-side-encryption"] == "aws:kms"
    assert put.headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/results"
    for request in (put, get):
        assert request.headers["x-amz-expected-bucket-owner"] == "123456789012"
        assert "x-amz-expected-bucket-owner" in signed_headers(request)
    assert "x-amz-server-side-encryption" not in get.headers
    assert caught.value.code == "AccessDenied"
    assert "s3:PutObject on arn:aws:s3:::" + bucket + "/kms/x" in str(caught.value)


def test_write_only_identity_publishes_with_puts_only(seaweed: SeaweedServer, s3_admin: BotoS3Client) -> None:
    prefix = f"wo-{uuid.uuid4().hex[:8]}/"
    objects = {f"{prefix}{n}.txt": f"file {n}".encode() for n in range(20)}
    with StoreProxy(seaweed.endpoint, lambda request: None) as proxy, engine_for(proxy.endpoint, WRITER) as engine:
        put_all(engine, WRITE_ONLY_BUCKET, objects, Metadata={"sha256": "00"})
    assert {s.method for s in proxy.requests()} == {"PUT"}
    for key, data in objects.items():
        assert s3_admin.get_object(Bucket=WRITE_ONLY_BUCKET, Key=key)["Body"].read() == data


def test_sized_jobs_and_many_files_keep_a_bounded_number_in_flight(
    seaweed: SeaweedServer, s3_admin: BotoS3Client, bucket: str
) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def job(n: int) -> PutRequest:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        data = f"object {n}".encode() * 10
        time.sleep(0.002)
        with lock:
            running -= 1
        return PutRequest(f"many/{n:04d}", data, hashlib.sha256(data).digest(), {})

    jobs = (PutJob(100, lambda n=n: job(n)) for n in range(300))  # a generator: nothing listed ahead
    with engine_for(seaweed.endpoint, concurrency=6) as engine:
        results = engine.put_many(bucket, jobs, lambda r: None)
    assert len(results) == 300
    assert peak <= 6
    assert s3_admin.list_objects_v2(Bucket=bucket, Prefix="many/")["KeyCount"] == 300


def test_concurrency_follows_the_transfer_options(seaweed: SeaweedServer, bucket: str) -> None:
    """The default (8, tuned for boto3) becomes 32; a lower setting, e.g. one object at a time, is kept."""
    running = peak = 0
    lock = threading.Lock()

    def job(n: int) -> PutRequest:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.005)
        with lock:
            running -= 1
        return PutRequest(f"conc/{n}", b"x", hashlib.sha256(b"x").digest(), {})

    for options, most in (({"concurrency": 1}, 1), ({}, native.DEFAULT_CONCURRENCY)):
        peak = 0
        with engine_for(seaweed.endpoint, **options) as engine:
            engine.put_many(bucket, [PutJob(1, lambda n=n: job(n)) for n in range(100)], lambda r: None)
        assert 1 <= peak <= most
    assert peak > 8  # the default really runs more than boto3's 8 at once


def test_a_failing_job_stops_the_publish_and_is_raised_as_is(engine: NativeEngine, bucket: str) -> None:
    started: list[int] = []

    def job(n: int) -> PutRequest:
        started.append(n)
        if n == 3:
            raise ValueError("the file changed while it was published")
        return PutRequest(f"stop/{n}", b"x", hashlib.sha256(b"x").digest(), {})

    def jobs() -> Iterator[PutJob]:
        for n in range(10_000):
            yield PutJob(1, lambda n=n: job(n))

    with pytest.raises(ValueError, match="changed while"):
        engine.put_many(bucket, jobs(), lambda r: None)
    assert len(started) < 10_000  # no job starts after the failure (the workers in flight finish theirs)


def test_a_failing_job_generator_is_raised_as_is(engine: NativeEngine, bucket: str) -> None:
    def jobs() -> Iterator[PutJob]:
        yield put_job("gen/1", b"x")
        raise OSError("listing the source failed")

    with pytest.raises(OSError, match="listing the source failed"):
        engine.put_many(bucket, jobs(), lambda r: None)


# ------------------------------------------------------------------------------------------ errors


def test_missing_bucket_and_key_are_translated(
    seaweed: SeaweedServer, engine: NativeEngine, bucket: str, tmp_path: Path
) -> None:
    with pytest.raises(S3RequestError) as caught:
        get_all(engine, f"missing-{uuid.uuid4().hex[:8]}", [GetRequest("k", tmp_path / "k")])
    assert (caught.value.code, caught.value.status) == ("NoSuchBucket", 404)
    assert "does not exist" in str(caught.value)
    assert caught.value.request_id
    assert caught.value.request_id in str(caught.value)
    assert type(caught.value.__cause__).__module__.startswith(("obstore", "builtins"))

    with pytest.raises(S3RequestError) as caught:
        get_all(engine, bucket, [GetRequest("no/such/key", tmp_path / "k")])
    assert (caught.value.code, caught.value.status, caught.value.key) == ("NoSuchKey", 404, "no/such/key")
    assert f"there is no object s3://{bucket}/no/such/key" in str(caught.value)


def test_non_admin_put_into_a_missing_bucket_is_refused(seaweed: SeaweedServer) -> None:
    """SeaweedFS answers a non-admin identity AccessDenied (an admin would create the bucket)."""
    with engine_for(seaweed.endpoint, WRITER) as engine, pytest.raises(S3RequestError) as caught:
        put_all(engine, f"missing-{uuid.uuid4().hex[:8]}", {"k": b"x"})
    assert (caught.value.code, caught.value.status) == ("AccessDenied", 403)
    assert "the credentials lack s3:PutObject on arn:aws:s3:::missing-" in str(caught.value)


def test_access_denied_names_the_permission(seaweed: SeaweedServer, tmp_path: Path) -> None:
    with engine_for(seaweed.endpoint, WRITER) as engine, pytest.raises(S3RequestError) as caught:
        get_all(engine, WRITE_ONLY_BUCKET, [GetRequest("any/key", tmp_path / "k")])
    assert (caught.value.code, caught.value.status, caught.value.operation) == ("AccessDenied", 403, "GetObject")
    assert f"lack s3:GetObject on arn:aws:s3:::{WRITE_ONLY_BUCKET}/any/key" in str(caught.value)


def test_wrong_secret_is_explained_and_never_shown(seaweed: SeaweedServer, bucket: str) -> None:
    secret = "wrong-secret-that-must-not-leak-0000001"
    wrong = Identity("wrong", ADMIN.access_key, secret, ())
    with engine_for(seaweed.endpoint, wrong) as engine, pytest.raises(S3RequestError) as caught:
        put_all(engine, bucket, {"k": b"x"})
    assert caught.value.code == "SignatureDoesNotMatch"
    assert "the secret key does not match the access key" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), str(caught.value.__cause__), repr(caught.value.__cause__)):
        assert secret not in text


def test_unknown_access_key(seaweed: SeaweedServer, bucket: str) -> None:
    stranger = Identity("stranger", "AKIANOTKNOWNHERE0001", "s" * 40, ())
    with engine_for(seaweed.endpoint, stranger) as engine, pytest.raises(S3RequestError) as caught:
        put_all(engine, bucket, {"k": b"x"})
    assert caught.value.code == "InvalidAccessKeyId"
    assert "not known to this S3 endpoint" in str(caught.value)


def test_unsupported_arguments_and_keys_are_named(engine: NativeEngine) -> None:
    assert engine.unsupported({"ContentType": "text/plain", "Metadata": {"a": "b"}, "Tagging": "a=b"}) is None
    assert "ACL" in (engine.unsupported({"ACL": "public-read"}) or "")
    assert "SSECustomerKey" in (engine.unsupported({"SSECustomerKey": "k", "ContentType": "x"}) or "")
    assert "Content-Type" in (engine.unsupported({"Metadata": {"Content-Type": "x"}}) or "")
    assert engine.unsupported({"ServerSideEncryption": "nope"})
    assert engine.unsupported({"ExpectedBucketOwner": "123456789012"}, operation="GetObject") is None
    assert "ContentType" in (engine.unsupported({"ContentType": "x"}, operation="GetObject") or "")
    assert engine.unsupported_key("a/b c/d.txt") is None
    for key in ("a//b", "a/./b", "a/../b", "/a", "a/", "a\x01b"):
        assert engine.unsupported_key(key), key


def test_keys_obstore_cannot_address_go_through_boto3(
    engine: NativeEngine, s3_admin: BotoS3Client, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=native.__name__)
    objects = {"odd//double-slash": b"boto3 sends this one", "plain/key": b"obstore sends this one"}
    put_all(engine, bucket, objects)
    got = get_all(engine, bucket, [GetRequest(k, tmp_path / str(n)) for n, k in enumerate(objects)])
    for key, data in objects.items():
        assert s3_admin.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert {g.request.key: g.request.path.read_bytes() for g in got} == objects
    assert any("through boto3" in r.getMessage() and "odd//double-slash" in r.getMessage() for r in caplog.records)


def test_an_object_whose_arguments_the_engine_cannot_send_fails_clearly(engine: NativeEngine, bucket: str) -> None:
    """The engine is chosen for a batch by its first object's arguments; a later one that differs is refused."""
    jobs = [put_job("a", b"x"), put_job("b", b"x", ACL="public-read")]
    with pytest.raises(S3RequestError, match="cannot go through the native engine") as caught:
        engine.put_many(bucket, jobs, lambda r: None)
    assert caught.value.code == "NativeEngineUnsupported"


# ------------------------------------------------------------------------------------------ retries


def test_transient_failures_are_retried_and_each_attempt_logged(
    seaweed: SeaweedServer,
    s3_admin: BotoS3Client,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fast_backoff: None,
) -> None:
    caplog.set_level(logging.WARNING, logger=native.__name__)
    objects = {f"r/{n}": f"retry me {n}".encode() * 100 for n in range(5)}
    with running_proxy(seaweed.endpoint, seed=9, script=(SLOWDOWN, RESET, SLOWDOWN)) as proxy:
        proxy.configure(operations=frozenset({"PutObject"}))
        with engine_for(proxy.endpoint) as engine:
            put_all(engine, bucket, objects)
            proxy.configure(operations=frozenset({"GetObject"}), script=(SLOWDOWN, RESET))
            get_all(engine, bucket, [GetRequest(k, tmp_path / k.replace("/", "_")) for k in objects])
        stats = proxy.stats()
    for key, data in objects.items():
        assert s3_admin.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert (tmp_path / key.replace("/", "_")).read_bytes() == data
    lines = [r.getMessage() for r in caplog.records if "retrying with backoff" in r.getMessage()]
    assert len(lines) == stats.injected == 5
    assert sum("S3 PutObject attempt 1 of 5 failed (HTTP 503 SlowDown)" in line for line in lines) >= 1
    assert sum(line.startswith("S3 GetObject attempt") for line in lines) == 2
    assert all(r.levelno == logging.WARNING for r in caplog.records if "retrying" in r.getMessage())


def test_max_attempts_bounds_the_retries(
    seaweed: SeaweedServer, bucket: str, caplog: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    caplog.set_level(logging.WARNING, logger=native.__name__)
    with (
        running_proxy(seaweed.endpoint, error_rate=1.0, error_kinds=(SLOWDOWN,)) as proxy,
        engine_for(proxy.endpoint, max_attempts=3) as engine,
        pytest.raises(S3RequestError) as caught,
    ):
        put_all(engine, bucket, {"never": b"x"})
    assert (caught.value.code, caught.value.status) == ("SlowDown", 503)
    assert proxy.stats().operations["PutObject"] == 3
    assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == [
        "S3 PutObject attempt 1 of 3 failed (HTTP 503 SlowDown); retrying with backoff",
        "S3 PutObject attempt 2 of 3 failed (HTTP 503 SlowDown); retrying with backoff",
    ]


def test_a_store_that_never_answers_times_out(seaweed: SeaweedServer, bucket: str, fast_backoff: None) -> None:
    began = time.monotonic()
    with (
        running_proxy(seaweed.endpoint, hang=True) as proxy,
        engine_for(proxy.endpoint, max_attempts=2, read_timeout=1.0) as engine,
        pytest.raises(S3RequestError) as caught,
    ):
        put_all(engine, bucket, {"hang": b"x"})
    assert caught.value.code == "ReadTimeoutError"
    assert "after 2 attempts" in str(caught.value)
    assert time.monotonic() - began < 30


def test_an_endpoint_that_refuses_connections(bucket: str, fast_backoff: None) -> None:
    with engine_for("http://127.0.0.1:9", max_attempts=2) as engine, pytest.raises(S3RequestError) as caught:
        put_all(engine, bucket, {"k": b"x"})
    assert caught.value.code == "EndpointConnectionError"
    assert "http://127.0.0.1:9" in str(caught.value)


# ------------------------------------------------------------------------------------------ credentials


class _Provider(CredentialProvider):  # type: ignore[misc]
    METHOD = "test-refreshable"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        self.credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self.credentials


def refreshable_session(refresh: Callable[[], dict[str, Any]]) -> boto3.Session:
    """A boto3 session whose credentials come from ``refresh`` (an assumed role, as botocore holds one)."""
    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test-refreshable")
    core = botocore.session.get_session()
    core.register_component("credential_provider", CredentialResolver([_Provider(credentials)]))
    return boto3.session.Session(botocore_session=core, region_name=REGION)


def test_refreshable_credentials_are_asked_again_after_expiry(
    seaweed: SeaweedServer, s3_admin: BotoS3Client, bucket: str
) -> None:
    """The first batch runs as WRITER (write-only); after the credentials expire the provider hands out
    ADMIN's keys, and only ADMIN may write to ``bucket``: a copied key would fail there."""
    calls = 0
    current = WRITER

    def refresh() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {
            "access_key": current.access_key,
            "secret_key": current.secret_key,
            "token": None,
            "expiry_time": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        }

    with engine_for(seaweed.endpoint, session=refreshable_session(refresh)) as engine:
        put_all(engine, WRITE_ONLY_BUCKET, {f"refresh-{uuid.uuid4().hex[:6]}": b"as writer"})
        after_first = calls
        current = ADMIN
        time.sleep(2.5)
        put_all(engine, bucket, {"as-admin": b"as admin"})
    assert calls > after_first
    assert s3_admin.get_object(Bucket=bucket, Key="as-admin")["Body"].read() == b"as admin"


def test_a_failing_credential_provider_is_a_clear_error(seaweed: SeaweedServer, bucket: str) -> None:
    state = {"fail": False}

    def refresh() -> dict[str, Any]:
        if state["fail"]:
            raise RuntimeError("sts is down")
        return {
            "access_key": ADMIN.access_key,
            "secret_key": ADMIN.secret_key,
            "token": None,
            "expiry_time": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        }

    with engine_for(seaweed.endpoint, session=refreshable_session(refresh), max_attempts=1) as engine:
        state["fail"] = True
        time.sleep(1.2)
        with pytest.raises(S3RequestError) as caught:
            put_all(engine, bucket, {"k": b"x"})
    assert caught.value.code == "CredentialsError"
    assert "sts is down" in str(caught.value)
    assert ADMIN.secret_key not in str(caught.value)


def test_session_token_of_the_connection_is_sent(recorder: StoreProxy, bucket: str) -> None:
    def refuse(request: Seen) -> Refusal:
        return Refusal(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")

    recorder.policy = refuse
    session = session_for(ADMIN, token="token-of-the-connection")
    with engine_for(recorder.endpoint, session=session) as engine, pytest.raises(S3RequestError):
        put_all(engine, bucket, {"k": b"x"})
    (seen,) = recorder.requests()
    assert seen.headers["x-amz-security-token"] == "token-of-the-connection"
    assert "x-amz-security-token" in signed_headers(seen)


def test_stray_aws_environment_variables_are_not_picked_up(
    monkeypatch: pytest.MonkeyPatch, recorder: StoreProxy, s3_admin: BotoS3Client, bucket: str, tmp_path: Path
) -> None:
    stray = {
        "AWS_ACCESS_KEY_ID": "AKIASTRAYSTRAYSTRAY1",
        "AWS_SECRET_ACCESS_KEY": "stray-secret",
        "AWS_SESSION_TOKEN": "stray-token",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_ENDPOINT": "http://127.0.0.1:9",
        "AWS_REGION": "eu-west-3",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "AWS_BUCKET": "stray-bucket",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true",
        "AWS_SKIP_SIGNATURE": "true",
        "AWS_REQUEST_PAYER": "true",
        "AWS_CHECKSUM_ALGORITHM": "CRC64NVME",
        "AWS_UNSIGNED_PAYLOAD": "false",
        "AWS_ALLOW_HTTP": "false",
        "AWS_S3_EXPRESS": "true",
        "AWS_DISABLE_TAGGING": "true",
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/stray",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "no-token"),
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds",
    }
    for name, value in stray.items():
        monkeypatch.setenv(name, value)
    with engine_for(recorder.endpoint) as engine:  # the session has the connection's keys, as the hook's does
        put_all(engine, bucket, {"env/k": b"no stray settings"}, Tagging="a=b")
        get_all(engine, bucket, [GetRequest("env/k", tmp_path / "k")])
    put, get = recorder.requests()
    for request in (put, get):
        assert request.target == f"/{bucket}/env/k"  # path-style, our endpoint, our bucket
        assert scope_region(request) == REGION
        assert ADMIN.access_key in request.headers["authorization"]
        assert "x-amz-security-token" not in request.headers
        assert "x-amz-request-payer" not in request.headers
    assert put.headers["x-amz-checksum-sha256"] == b64_sha256(b"no stray settings")
    assert "x-amz-checksum-crc64nvme" not in put.headers
    assert put.headers["x-amz-tagging"] == "a=b"
    assert s3_admin.get_object(Bucket=bucket, Key="env/k")["Body"].read() == b"no stray settings"


@pytest.mark.parametrize(
    ("variable", "checksums"),
    [
        ("AWS_SERVER_SIDE_ENCRYPTION", True),
        ("AWS_SSE_KMS_KEY_ID", True),
        ("AWS_CHECKSUM_ALGORITHM", False),
    ],
)
def test_environment_settings_that_cannot_be_overridden_make_it_step_aside(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, variable: str, checksums: bool
) -> None:
    monkeypatch.setenv(variable, "aws:kms" if variable == "AWS_SERVER_SIDE_ENCRYPTION" else "SHA256")
    with pytest.raises(EngineUnavailable, match=variable):
        engine_for(seaweed.endpoint, checksums=checksums)


# ------------------------------------------------------------------------------------------ stores


def test_store_refusing_checksum_headers(
    seaweed: SeaweedServer, s3_admin: BotoS3Client, bucket: str, tmp_path: Path
) -> None:
    """GCS's XML API: checksums=False sends no checksum header at all; the default is refused with the hint."""
    with StoreProxy(seaweed.endpoint, refuse_checksum_headers) as gcs:
        with engine_for(gcs.endpoint, region="auto", max_attempts=1) as engine, pytest.raises(S3RequestError) as caught:
            put_all(engine, bucket, {"gcs/default": b"x"})
        assert caught.value.code == "InvalidArgument"
        assert "TransferOptions(checksums=False)" in str(caught.value)
        with engine_for(gcs.endpoint, region="auto", checksums=False) as engine:
            put_all(engine, bucket, {"gcs/k": b"no checksum header"})
            get_all(engine, bucket, [GetRequest("gcs/k", tmp_path / "k")])
        put = [s for s in gcs.requests() if s.refusal is None and s.method == "PUT"]
    assert put
    assert not any(name.startswith("x-amz-checksum") for name in put[0].headers)
    assert put[0].headers["x-amz-content-sha256"] == hashlib.sha256(b"no checksum header").hexdigest()
    assert (tmp_path / "k").read_bytes() == b"no checksum header"
    assert s3_admin.get_object(Bucket=bucket, Key="gcs/k")["Body"].read() == b"no checksum header"


def test_r2_region_auto_signs_for_auto(recorder: StoreProxy, s3_admin: BotoS3Client, bucket: str) -> None:
    with engine_for(recorder.endpoint, region="auto") as engine:
        put_all(engine, bucket, {"r2/k": b"signed for auto"})
    assert {scope_region(s) for s in recorder.requests()} == {"auto"}
    assert s3_admin.get_object(Bucket=bucket, Key="r2/k")["Body"].read() == b"signed for auto"


@pytest.fixture(scope="module")
def vhost_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeaweedServer, StoreProxy]]:
    """A SeaweedFS serving ``<bucket>.vhost.localhost`` behind a proxy refusing path-style requests."""
    with (
        virtual_host_seaweed(tmp_path_factory.mktemp("seaweed-vhost"), [ADMIN], VHOST_DOMAIN) as server,
        StoreProxy(server.endpoint, virtual_host_only(VHOST_DOMAIN)) as proxy,
    ):
        yield server, proxy


def test_virtual_host_only_store(
    vhost_store: tuple[SeaweedServer, StoreProxy], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``<bucket>.vhost.localhost`` does not resolve on every machine, and the engine resolves names in
    Rust (no Python hook): the standard HTTP_PROXY variable sends its requests to the store's proxy,
    which relays them with their Host header intact (as a forward proxy would)."""
    server, proxy = vhost_store
    name = f"vh-{uuid.uuid4().hex[:8]}"
    server.create_bucket(name)
    admin = server.client()  # straight to the server (NO_PROXY below), path-style
    monkeypatch.setenv("HTTP_PROXY", proxy.endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    endpoint = f"http://{VHOST_DOMAIN}:{proxy.port}"
    with engine_for(endpoint, style="virtual") as engine:
        put_all(engine, name, {"v/k": b"virtual host"})
        get_all(engine, name, [GetRequest("v/k", tmp_path / "k")])
    assert admin.get_object(Bucket=name, Key="v/k")["Body"].read() == b"virtual host"
    assert (tmp_path / "k").read_bytes() == b"virtual host"
    assert {s.host for s in proxy.requests() if s.refusal is None} == {f"{name}.{VHOST_DOMAIN}"}
    with engine_for(endpoint, style="path", max_attempts=1) as engine, pytest.raises(S3RequestError) as caught:
        put_all(engine, name, {"v/path": b"x"})
    assert (caught.value.code, caught.value.status) == ("SecondLevelDomainForbidden", 403)
    assert "Please use virtual hosted style" in str(caught.value)


def ca_signed_tls(host: str, directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context whose certificate for ``host`` is signed by a fresh private CA; and the CA's PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def build(subject: str, issuer: x509.Name | None, signer: Any, public: Any, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test private CA", None, ca_key, ca_key.public_key(), ca=True)
    leaf = build(host, ca.subject, ca_key, key.public_key(), ca=False)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "leaf.pem", directory / "key.pem")
    return context, directory / "ca.pem"


def test_tls_with_the_connections_ca_bundle(
    seaweed: SeaweedServer, s3_admin: BotoS3Client, bucket: str, tmp_path: Path
) -> None:
    tls, ca = ca_signed_tls("localhost", tmp_path / "tls")
    with StoreProxy(seaweed.endpoint, lambda request: None, tls=tls) as front:
        endpoint = f"https://localhost:{front.port}"
        with engine_for(endpoint, verify=str(ca)) as engine:
            put_all(engine, bucket, {"tls/k": b"over tls"})
        with engine_for(endpoint, verify=False) as engine:
            put_all(engine, bucket, {"tls/unverified": b"x"})
        with engine_for(endpoint, max_attempts=1) as engine, pytest.raises(S3RequestError) as caught:
            put_all(engine, bucket, {"tls/untrusted": b"x"})  # the system's roots do not know the test CA
    assert caught.value.code == "EndpointConnectionError"
    assert s3_admin.get_object(Bucket=bucket, Key="tls/k")["Body"].read() == b"over tls"
    assert {o["Key"] for o in s3_admin.list_objects_v2(Bucket=bucket)["Contents"]} == {"tls/k", "tls/unverified"}


def test_ca_bundle_from_the_session_settings(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, bucket: str, tmp_path: Path
) -> None:
    """verify=None honours the session's ca_bundle (AWS_CA_BUNDLE), as botocore does."""
    tls, ca = ca_signed_tls("localhost", tmp_path / "tls")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
    with (
        StoreProxy(seaweed.endpoint, lambda request: None, tls=tls) as front,
        engine_for(f"https://localhost:{front.port}", verify=None) as engine,
    ):
        put_all(engine, bucket, {"tls/env-bundle": b"x"})


def test_a_self_signed_ca_as_server_certificate_makes_it_step_aside(seaweed: SeaweedServer, tmp_path: Path) -> None:
    """rustls refuses a server certificate that is a CA itself (openssl req -x509, MinIO's certgen);
    OpenSSL (boto3) accepts it, so the engine leaves such a connection to boto3."""
    tls, cert = self_signed_tls(["localhost"], tmp_path / "tls")
    with (
        StoreProxy(seaweed.endpoint, lambda request: None, tls=tls) as front,
        pytest.raises(EngineUnavailable, match="self-signed CA certificate"),
    ):
        engine_for(f"https://localhost:{front.port}", verify=str(cert))


# ------------------------------------------------------------------------------------------ fallback


def test_a_missing_obstore_makes_the_client_use_boto3(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, bucket: str
) -> None:
    for name in [m for m in sys.modules if m == "obstore" or m.startswith("obstore.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "obstore", None)  # `import obstore` now raises ImportError
    with pytest.raises(EngineUnavailable, match="obstore cannot be imported"):
        engine_for(seaweed.endpoint)
    caplog.set_level(logging.INFO)
    client = client_for(seaweed.endpoint)
    engine = select_engine(client, {"ContentType": "text/plain"}, logging.getLogger("test"))
    assert isinstance(engine, BotoEngine)
    assert any("boto3 engine" in r.getMessage() and "obstore" in r.getMessage() for r in caplog.records)
    engine.put_many(bucket, [put_job("fallback/k", b"still published")], lambda r: None)
    with pytest.raises(InvalidSpecError, match="obstore cannot be imported"):
        select_engine(client_for(seaweed.endpoint, engine="native"), {}, logging.getLogger("test"))


def test_an_engine_chosen_for_a_bucket_builds_one_store_and_keeps_it(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, bucket: str
) -> None:
    built: list[str] = []
    build = NativeEngine._build_store

    def counted(self: NativeEngine, name: str, headers: Any, sse: Any) -> Any:
        built.append(name)
        return build(self, name, headers, sse)

    monkeypatch.setattr(NativeEngine, "_build_store", counted)
    client = client_for(seaweed.endpoint)
    engine = select_engine(client, {}, logging.getLogger("test"), bucket)
    assert isinstance(engine, NativeEngine)
    put_all(engine, bucket, {"kept/a": b"one", "kept/b": b"two"})
    assert engine.open(bucket, "kept/a").stream.read() == b"one"
    assert built == [bucket]  # the settings were checked on the store the transfer then used

    built.clear()
    unknown = engine_for(seaweed.endpoint)  # no bucket yet: a throwaway store checks the settings
    put_all(unknown, bucket, {"kept/c": b"three"})
    assert built == ["probe-bucket", bucket]


def test_the_client_from_an_airflow_connection_picks_the_native_engine(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, s3_admin: BotoS3Client, bucket: str, tmp_path: Path
) -> None:
    client = connect(use_connection(monkeypatch, "native_conn", seaweed, ADMIN))
    engine = client.engine({"ContentType": "text/plain", "Metadata": {"sha256": "00"}})
    assert isinstance(engine, NativeEngine)
    put_all(engine, bucket, {"conn/k": b"through the connection"}, ContentType="text/plain")
    assert s3_admin.get_object(Bucket=bucket, Key="conn/k")["Body"].read() == b"through the connection"
    assert isinstance(client.engine({"ACL": "private"}), BotoEngine)  # an argument it cannot send
    client.close()


def test_a_process_forked_after_obstore_was_loaded_does_not_use_it(seaweed: SeaweedServer, bucket: str) -> None:
    """obstore's runtime threads are gone in a forked child, where its calls would hang: the engine steps
    aside there (exit code 3), while the parent keeps working."""
    with engine_for(seaweed.endpoint) as engine:
        put_all(engine, bucket, {"fork/parent": b"x"})
        pid = os.fork()
        if pid == 0:  # the child: report by exit code only, never return into pytest
            code = 1
            try:
                engine_for(seaweed.endpoint)
            except EngineUnavailable as err:
                code = 3 if "forked" in str(err) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        put_all(engine, bucket, {"fork/parent-again": b"x"})
    assert os.waitstatus_to_exitcode(status) == 3


def test_a_replaced_python_resolver_makes_it_step_aside(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """obstore resolves names without Python: where socket.getaddrinfo is replaced (gevent, eventlet, a
    test's fake names) it would reach another host than boto3 does for the same endpoint."""
    real = socket.getaddrinfo

    def fake(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(EngineUnavailable, match="name resolution is replaced"):
        engine_for(seaweed.endpoint)


def test_no_credentials_makes_it_step_aside(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    core = botocore.session.get_session()
    core.register_component("credential_provider", CredentialResolver([]))
    with pytest.raises(EngineUnavailable, match="no credentials"):
        engine_for(seaweed.endpoint, session=boto3.session.Session(botocore_session=core))
