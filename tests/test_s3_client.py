"""The S3 seam against a real SeaweedFS: one client for publish() and fetch(), error translation, presigning."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.session
import pytest

from airflow_s3_publisher import fetch, publish
from airflow_s3_publisher.exceptions import InvalidSpecError, S3RequestError
from airflow_s3_publisher.options import TransferOptions
from airflow_s3_publisher.s3 import client as client_module
from airflow_s3_publisher.s3 import connect
from tests.support import SAMPLE_FILES, make_tree, read_tree, sha256_b64, use_connection
from tools.seaweed import ADMIN, READER, WRITE_ONLY_BUCKET, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def admin_conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    return use_connection(monkeypatch, "s3_admin", seaweed, ADMIN)


def test_one_client_serves_publish_and_fetch(tmp_path: Path, bucket: str, admin_conn: str) -> None:
    client = connect(admin_conn)
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    for compress in (False, True):
        result = publish(source, bucket=bucket, key=f"c{compress}", compress=compress, client=client)
        assert (result.endpoint, result.region) == (client.endpoint, client.region)
        assert read_tree(fetch(result, tmp_path / f"in-{compress}", client=client)) == SAMPLE_FILES


def test_publish_and_fetch_close_the_client_they_built_and_leave_a_given_one_open(
    tmp_path: Path, bucket: str, admin_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[int] = []
    close = client_module.S3Client.close

    def recording_close(self: client_module.S3Client) -> None:
        closed.append(id(self))
        close(self)

    monkeypatch.setattr(client_module.S3Client, "close", recording_close)
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    result = publish(source, bucket=bucket, key="built", aws_conn_id=admin_conn)  # one PUT per file: an engine
    assert len(closed) == 1
    assert read_tree(fetch(result, tmp_path / "in", aws_conn_id=admin_conn)) == SAMPLE_FILES
    assert len(closed) == 2
    given = connect(admin_conn)
    fetch(publish(source, bucket=bucket, key="given", client=given), tmp_path / "again", client=given)
    assert id(given) not in closed
    assert len(closed) == 2


def test_a_client_for_another_endpoint_is_refused(tmp_path: Path, bucket: str, admin_conn: str) -> None:
    client = connect(admin_conn)
    with pytest.raises(InvalidSpecError, match="endpoint 'http://elsewhere:9000' is not the given client's"):
        publish(
            make_tree(tmp_path, SAMPLE_FILES), bucket=bucket, key="k", endpoint="http://elsewhere:9000", client=client
        )


def test_transfer_options_replace_the_clients(admin_conn: str) -> None:
    client = connect(admin_conn)
    other = client.with_options(TransferOptions(checksums=False))
    assert other.options.checksums is False
    assert other.raw is client.raw
    assert client.with_options(None) is client


def test_the_boto3_client_is_made_only_when_a_request_needs_it(
    tmp_path: Path, bucket: str, admin_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    create_client = botocore.session.Session.create_client

    def counting(self: botocore.session.Session, service_name: str, *args: object, **kwargs: object) -> object:
        made.append(service_name)
        return create_client(self, service_name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(botocore.session.Session, "create_client", counting)
    client = connect(admin_conn)  # the connection names an endpoint and a region
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    result = publish(source, bucket=bucket, key="lazy", manifest=True, client=client)  # native engine only
    assert made == []
    copy = client.with_options(TransferOptions(concurrency=2))
    copy.list_objects(bucket, result.key).__next__()
    assert made == ["s3"]
    assert client.raw is copy.raw  # made once, shared
    assert made == ["s3"]


@pytest.mark.parametrize("checksums", [True, False], ids=["checksums", "no-checksums"])
def test_a_body_is_hashed_for_its_signature_only_without_a_checksum(
    checksums: bool, tmp_path: Path, bucket: str, admin_conn: str, s3_admin: S3Client
) -> None:
    # Over plain HTTP botocore signs a hash of every body; the signed x-amz-checksum-sha256 header already
    # binds it, so with checksums on the body is not hashed a second time (as botocore does over HTTPS).
    client = connect(admin_conn, options=TransferOptions(checksums=checksums, engine="boto3"))
    sent: list[tuple[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((headers["x-amz-content-sha256"], headers.get("x-amz-checksum-sha256", "")))

    client.raw.meta.events.register("before-send.s3.PutObject", record)
    publish(make_tree(tmp_path / "out", {"a.txt": b"payload"}), bucket=bucket, key="signed/", client=client)
    assert s3_admin.get_object(Bucket=bucket, Key="signed/a.txt")["Body"].read() == b"payload"
    [(content_sha256, checksum)] = sent
    if checksums:
        assert (content_sha256, checksum) == ("UNSIGNED-PAYLOAD", sha256_b64(b"payload"))
    else:
        assert (content_sha256, checksum) == (hashlib.sha256(b"payload").hexdigest(), "")


@pytest.mark.parametrize("deleted_version", [False, True], ids=["missing-key", "deleted-version"])
def test_missing_objects_and_versions_are_not_found(
    versioned_bucket: str, admin_conn: str, s3_admin: S3Client, deleted_version: bool
) -> None:
    version = ""
    if deleted_version:
        version = s3_admin.put_object(Bucket=versioned_bucket, Key="no/such/key", Body=b"gone")["VersionId"]
        s3_admin.delete_object(Bucket=versioned_bucket, Key="no/such/key", VersionId=version)
    with pytest.raises(S3RequestError) as caught:
        connect(admin_conn).get_object(versioned_bucket, "no/such/key", version)
    err = caught.value
    assert err.is_not_found, err.code
    assert (err.operation, err.bucket, err.key) == ("GetObject", versioned_bucket, "no/such/key")
    assert f"s3://{versioned_bucket}/no/such/key" in str(err)


def test_refused_reads_are_not_not_found(
    monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer, s3_admin: S3Client
) -> None:
    s3_admin.put_object(Bucket=WRITE_ONLY_BUCKET, Key="here.txt", Body=b"x")
    reader = connect(use_connection(monkeypatch, "s3_reader", seaweed, READER))
    assert reader.get_object(WRITE_ONLY_BUCKET, "here.txt").stream.read() == b"x"
    with pytest.raises(S3RequestError) as caught:
        next(iter(reader.list_objects("t-not-mine", "")))
    assert not caught.value.is_not_found
    assert caught.value.operation == "ListObjectsV2"


def test_presigned_url_serves_the_object_until_it_expires(bucket: str, admin_conn: str, s3_admin: S3Client) -> None:
    s3_admin.put_object(Bucket=bucket, Key="shared.txt", Body=b"shared bytes")
    url = connect(admin_conn).presign_get(bucket, "shared.txt", expires=60)
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=60" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback URL we made
        assert response.read() == b"shared bytes"


def test_listing_pages_through_every_key(bucket: str, admin_conn: str, s3_admin: S3Client) -> None:
    for i in range(1005):  # more than one page of 1,000
        s3_admin.put_object(Bucket=bucket, Key=f"many/{i:04d}", Body=b"")
    listed = list(connect(admin_conn).list_objects(bucket, "many/"))
    assert [key for key, _ in listed] == [f"many/{i:04d}" for i in range(1005)]
