"""The SeaweedFS facts the rest of the suite relies on: identities, refusals, versioning, checksums, cleanup.

SeaweedFS 4.48 (`weed mini`) answers, as recorded here:
- wrong secret key -> 403 SignatureDoesNotMatch; unknown access key -> 403 InvalidAccessKeyId;
- write-only identity: GetObject / ListObjects -> 403 AccessDenied, HeadObject -> 403 with code "403" (no body);
- a wrong x-amz-checksum-sha256 (PutObject or UploadPart) -> 400 BadDigest (message talks about Content-Md5);
- a non-admin PUT into a missing bucket -> 403 AccessDenied (an admin would silently create the bucket).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tools.seaweed import ADMIN, READER, WRITE_ONLY_BUCKET, WRITER, Identity, SeaweedServer

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_s3 import S3Client

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _error(call: Callable[[], Any]) -> tuple[int, str]:
    """Run an S3 call that must fail; return (HTTP status, error code)."""
    with pytest.raises(ClientError) as excinfo:
        call()
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a listener would (TIME_WAIT is fine)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ------------------------------------------------------------------------------------------ identities


def test_admin_can_put_and_get(s3_admin: S3Client, bucket: str) -> None:
    s3_admin.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello world")
    got = s3_admin.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == b"hello world"
    assert got["ContentLength"] == len(b"hello world")


def test_writer_can_put_object(seaweed: SeaweedServer, s3_admin: S3Client) -> None:
    writer = seaweed.client(WRITER)
    writer.put_object(Bucket=WRITE_ONLY_BUCKET, Key="writer/put.txt", Body=b"from the writer")
    assert s3_admin.get_object(Bucket=WRITE_ONLY_BUCKET, Key="writer/put.txt")["Body"].read() == b"from the writer"


def test_writer_can_run_a_multipart_upload(seaweed: SeaweedServer, s3_admin: S3Client) -> None:
    writer = seaweed.client(WRITER)
    key = "writer/multipart.bin"
    parts_data = [os.urandom(5 * MIB), b"last part"]
    upload_id = writer.create_multipart_upload(Bucket=WRITE_ONLY_BUCKET, Key=key)["UploadId"]
    parts = []
    for number, data in enumerate(parts_data, start=1):
        etag = writer.upload_part(Bucket=WRITE_ONLY_BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=data)[
            "ETag"
        ]
        parts.append({"PartNumber": number, "ETag": etag})
    done = writer.complete_multipart_upload(
        Bucket=WRITE_ONLY_BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert done["ETag"].strip('"').endswith("-2")
    assert s3_admin.get_object(Bucket=WRITE_ONLY_BUCKET, Key=key)["Body"].read() == b"".join(parts_data)


@pytest.mark.parametrize(
    ("operation", "expected_code"),
    [
        ("get_object", "AccessDenied"),
        ("head_object", "403"),  # HEAD responses have no body, so botocore only sees the status
        ("list_objects_v2", "AccessDenied"),
        ("list_objects", "AccessDenied"),
    ],
)
def test_writer_cannot_read_or_list(
    seaweed: SeaweedServer, s3_admin: S3Client, operation: str, expected_code: str
) -> None:
    s3_admin.put_object(Bucket=WRITE_ONLY_BUCKET, Key="writer/secret.txt", Body=b"not for the writer")
    writer = seaweed.client(WRITER)
    kwargs: dict[str, str] = {"Bucket": WRITE_ONLY_BUCKET}
    if operation in ("get_object", "head_object"):
        kwargs["Key"] = "writer/secret.txt"
    assert _error(lambda: getattr(writer, operation)(**kwargs)) == (403, expected_code)


def test_writer_cannot_put_into_another_or_missing_bucket(seaweed: SeaweedServer, bucket: str) -> None:
    writer = seaweed.client(WRITER)
    assert _error(lambda: writer.put_object(Bucket=bucket, Key="k", Body=b"x")) == (403, "AccessDenied")
    # A non-admin PUT into a bucket that does not exist is refused (an admin's would create the bucket).
    missing = bucket + "-missing"
    assert _error(lambda: writer.put_object(Bucket=missing, Key="k", Body=b"x")) == (403, "AccessDenied")
    assert missing not in {b["Name"] for b in seaweed.client().list_buckets()["Buckets"]}


def test_reader_can_get_but_not_put(seaweed: SeaweedServer, s3_admin: S3Client) -> None:
    s3_admin.put_object(Bucket=WRITE_ONLY_BUCKET, Key="reader/published.txt", Body=b"published")
    reader = seaweed.client(READER)
    assert reader.get_object(Bucket=WRITE_ONLY_BUCKET, Key="reader/published.txt")["Body"].read() == b"published"
    listed = reader.list_objects_v2(Bucket=WRITE_ONLY_BUCKET, Prefix="reader/")
    assert [obj["Key"] for obj in listed["Contents"]] == ["reader/published.txt"]
    refused = _error(lambda: reader.put_object(Bucket=WRITE_ONLY_BUCKET, Key="reader/new.txt", Body=b"x"))
    assert refused == (403, "AccessDenied")
    assert _error(lambda: s3_admin.head_object(Bucket=WRITE_ONLY_BUCKET, Key="reader/new.txt"))[0] == 404


@pytest.mark.parametrize(
    ("identity", "expected_code"),
    [
        (replace(ADMIN, secret_key="not-the-secret-key"), "SignatureDoesNotMatch"),
        (replace(ADMIN, access_key="NOSUCHACCESSKEY00001"), "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-access-key"],
)
def test_bad_credentials_are_refused(
    seaweed: SeaweedServer, bucket: str, identity: Identity, expected_code: str
) -> None:
    s3 = seaweed.client(identity)
    assert _error(s3.list_buckets) == (403, expected_code)
    assert _error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x")) == (403, expected_code)


# ------------------------------------------------------------------------------------------ buckets


def test_bucket_fixture_is_fresh_and_empty(s3_admin: S3Client, bucket: str) -> None:
    assert bucket.startswith("t-")
    assert len(bucket) == 10
    assert bucket == bucket.lower()
    assert s3_admin.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert s3_admin.get_bucket_versioning(Bucket=bucket).get("Status") in (None, "Suspended")


def test_versioned_bucket_returns_version_ids(s3_admin: S3Client, versioned_bucket: str) -> None:
    assert s3_admin.get_bucket_versioning(Bucket=versioned_bucket)["Status"] == "Enabled"
    first = s3_admin.put_object(Bucket=versioned_bucket, Key="k", Body=b"one")
    second = s3_admin.put_object(Bucket=versioned_bucket, Key="k", Body=b"two")
    assert first.get("VersionId")
    assert second.get("VersionId")
    assert first["VersionId"] != second["VersionId"]
    old = s3_admin.get_object(Bucket=versioned_bucket, Key="k", VersionId=first["VersionId"])
    assert old["Body"].read() == b"one"


# ------------------------------------------------------------------------------------------ checksums


def test_put_with_correct_sha256_is_accepted_and_echoed(s3_admin: S3Client, bucket: str) -> None:
    body = b"checked content"
    put = s3_admin.put_object(
        Bucket=bucket, Key="ok.txt", Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=_sha256_b64(body)
    )
    assert put["ChecksumSHA256"] == _sha256_b64(body)
    got = s3_admin.get_object(Bucket=bucket, Key="ok.txt", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == _sha256_b64(body)


@pytest.fixture
def admin_without_retries(seaweed: SeaweedServer) -> S3Client:
    """The admin's client without retries: botocore's legacy mode retries a BadDigest four times, with backoff."""
    return seaweed.client(retries={"mode": "standard", "max_attempts": 1})


def test_put_with_wrong_sha256_is_rejected(admin_without_retries: S3Client, bucket: str) -> None:
    s3_admin = admin_without_retries
    wrong = _sha256_b64(b"some other content")
    refused = _error(
        lambda: s3_admin.put_object(
            Bucket=bucket, Key="bad.txt", Body=b"the real content", ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong
        )
    )
    assert refused == (400, "BadDigest")
    assert _error(lambda: s3_admin.head_object(Bucket=bucket, Key="bad.txt"))[0] == 404


def test_multipart_with_sha256_part_checksums_completes(seaweed: SeaweedServer, s3_admin: S3Client) -> None:
    writer = seaweed.client(WRITER)  # the publish path: a write-only identity
    key = "checksums/multipart.bin"
    parts_data = [os.urandom(5 * MIB), os.urandom(1234)]
    upload_id = writer.create_multipart_upload(Bucket=WRITE_ONLY_BUCKET, Key=key, ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    parts = []
    for number, data in enumerate(parts_data, start=1):
        part = writer.upload_part(
            Bucket=WRITE_ONLY_BUCKET,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_sha256_b64(data),
        )
        assert part["ChecksumSHA256"] == _sha256_b64(data)
        parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]})
    done = writer.complete_multipart_upload(
        Bucket=WRITE_ONLY_BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    # As on AWS: a composite checksum (SHA-256 of the concatenated part digests) with a "-<parts>" suffix,
    # not the SHA-256 of the object.
    composite = base64.b64encode(
        hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in parts_data)).digest()
    ).decode()
    assert done["ChecksumSHA256"] == f"{composite}-2"
    assert s3_admin.get_object(Bucket=WRITE_ONLY_BUCKET, Key=key)["Body"].read() == b"".join(parts_data)


def test_upload_part_with_wrong_sha256_is_rejected(admin_without_retries: S3Client, bucket: str) -> None:
    s3_admin = admin_without_retries
    upload_id = s3_admin.create_multipart_upload(Bucket=bucket, Key="mp.bin", ChecksumAlgorithm="SHA256")["UploadId"]
    refused = _error(
        lambda: s3_admin.upload_part(
            Bucket=bucket,
            Key="mp.bin",
            UploadId=upload_id,
            PartNumber=1,
            Body=b"part data",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_sha256_b64(b"different data"),
        )
    )
    assert refused == (400, "BadDigest")
    s3_admin.abort_multipart_upload(Bucket=bucket, Key="mp.bin", UploadId=upload_id)


# ------------------------------------------------------------------------------------------ lifecycle


def test_stop_leaves_no_process_and_frees_the_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stray AWS credentials in our environment must not reach the server (they would change its auth).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "STRAYACCESSKEY000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stray-secret")
    server = SeaweedServer(tmp_path / "sw", [ADMIN])
    with server:
        pid, port = server.pid, server.s3_port
        assert server.endpoint == f"http://127.0.0.1:{port}"
        assert _pid_alive(pid)
        assert server.client().list_buckets()["Buckets"] == []
        stray = Identity("stray", "STRAYACCESSKEY000001", "stray-secret", ("Admin",))
        assert _error(server.client(stray).list_buckets) == (403, "InvalidAccessKeyId")
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        assert not [var for var in environ if var.startswith(b"AWS_")]
        assert b"GOMEMLIMIT=1GiB" in environ
    assert not _pid_alive(pid)
    assert not server.is_running
    assert _port_free(port)
    assert _port_free(port + 10000)
    server.stop()  # idempotent
    # logs and sockets stayed in the work directory
    assert (tmp_path / "sw" / "logs").is_dir()
    assert any((tmp_path / "sw" / "logs").iterdir())


def test_cli_prints_json_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tools" / "seaweed.py"), "--dir", str(tmp_path / "cli")]
        + ["--access-key", "CLIACCESSKEY00000001", "--secret-key", "cli-secret"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        assert ready, "no JSON line within 90 s"
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"endpoint", "pid", "access_key", "secret_key"}
        assert info["access_key"] == "CLIACCESSKEY00000001"
        assert info["secret_key"] == "cli-secret"
        assert info["endpoint"].startswith("http://127.0.0.1:")
        weed_pid = info["pid"]
        assert _pid_alive(weed_pid)
        s3 = boto3.client(
            "s3",
            endpoint_url=info["endpoint"],
            region_name="us-east-1",
            aws_access_key_id=info["access_key"],
            aws_secret_access_key=info["secret_key"],
            config=Config(s3={"addressing_style": "path"}),
        )
        assert s3.list_buckets()["Buckets"] == []
        wrong = boto3.client(
            "s3",
            endpoint_url=info["endpoint"],
            region_name="us-east-1",
            aws_access_key_id=info["access_key"],
            aws_secret_access_key="wrong",
        )
        assert _error(wrong.list_buckets) == (403, "SignatureDoesNotMatch")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 5
        while _pid_alive(weed_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(weed_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
