"""publish() against a real SeaweedFS server: layout, checksums, versions, least privilege, errors."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import airflow_s3_publisher.s3.client as s3_client_module
import airflow_s3_publisher.s3.multipart as multipart_module
import airflow_s3_publisher.uploads as uploads_module
from airflow_s3_publisher import PublishedResult, Snapshot, fetch, publish
from airflow_s3_publisher.exceptions import (
    ChecksumMismatchError,
    FetchError,
    InvalidSpecError,
    PublishError,
    S3RequestError,
    SourceError,
)
from airflow_s3_publisher.hashing import b64
from airflow_s3_publisher.manifest import MANIFEST_NAME
from airflow_s3_publisher.options import MiB, ObjectOptions, TransferOptions
from airflow_s3_publisher.s3 import S3Client as PublisherClient
from airflow_s3_publisher.s3 import connect
from tests.storeproxy import StoreProxy
from tests.support import (
    SAMPLE_FILES,
    archive_members,
    make_tree,
    objects_below,
    read_tree,
    sha256_b64,
    use_connection,
)
from tools.seaweed import ADMIN, WRITE_ONLY_BUCKET, WRITER, Identity, SeaweedServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PUT_ONLY = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
SMALL_PARTS = TransferOptions(part_size=5 * MiB, multipart_threshold=5 * MiB, concurrency=4)


@pytest.fixture
def admin_conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    return use_connection(monkeypatch, "s3_admin", seaweed, ADMIN)


@pytest.fixture
def writer_conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    return use_connection(monkeypatch, "s3_writer", seaweed, WRITER)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "out", SAMPLE_FILES)


class Recorder:
    """Builds clients that record (operation, headers) of every S3 request they send."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def client(self, conn_id: str) -> PublisherClient:
        client = connect(conn_id)
        client.raw.meta.events.register("before-call.s3", self._record)
        return client

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.seen.append((model.name, {k.lower(): str(v) for k, v in params.get("headers", {}).items()}))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


@pytest.fixture
def requests() -> Recorder:
    """Clients for publish(client=...) that record every S3 request sent."""
    return Recorder()


class TestPlain:
    def test_directory_becomes_one_object_per_file(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str, seaweed: SeaweedServer
    ) -> None:
        result = publish(source, f"s3://{bucket}/runs/one", aws_conn_id=admin_conn)
        assert result == PublishedResult(bucket, "runs/one/", "us-east-1", seaweed.endpoint, "", "")
        assert objects_below(s3_admin, bucket) == {f"runs/one/{k}": v for k, v in SAMPLE_FILES.items()}

    def test_single_file_is_key_plus_file_name(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str
    ) -> None:
        result = publish(source / "outputs" / "result.csv", bucket=bucket, key="single", aws_conn_id=admin_conn)
        assert result.key == "single/"
        assert objects_below(s3_admin, bucket) == {"single/result.csv": SAMPLE_FILES["outputs/result.csv"]}

    def test_large_file_goes_multipart_with_right_bytes(
        self,
        tmp_path: Path,
        bucket: str,
        s3_admin: S3Client,
        admin_conn: str,
        requests: Recorder,
    ) -> None:
        data = os.urandom(12 * MiB + 123)
        make_tree(tmp_path / "big", {"big.bin": data, "small.txt": b"x"})
        publish(tmp_path / "big", bucket=bucket, key="mp/", client=requests.client(admin_conn), transfer=SMALL_PARTS)
        stored = objects_below(s3_admin, bucket, "mp/")
        assert hashlib.sha256(stored["mp/big.bin"]).digest() == hashlib.sha256(data).digest()
        assert stored["mp/small.txt"] == b"x"
        assert requests.names.count("UploadPart") == 3
        assert set(requests.names) <= PUT_ONLY
        # Metadata goes with CreateMultipartUpload, yet the object still carries its own SHA-256.
        head = s3_admin.head_object(Bucket=bucket, Key="mp/big.bin")
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()

    @pytest.mark.parametrize("checksums", [True, False], ids=["checksums", "no-checksums"])
    def test_large_file_rewritten_between_hash_and_upload_stores_nothing(
        self,
        checksums: bool,
        tmp_path: Path,
        bucket: str,
        s3_admin: S3Client,
        admin_conn: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # With checksums, the parts' digests come from the first read and S3 refuses the rewritten part;
        # without them, the upload hashes the file again. Either way the error names the file.
        big = make_tree(tmp_path / "src", {"big.bin": os.urandom(12 * MiB)}) / "big.bin"
        hasher = "hash_listed_parts" if checksums else "hash_listed"
        real_hash = getattr(uploads_module, hasher)

        def hash_then_rewrite(*args: Any) -> Any:
            digests = real_hash(*args)
            # Same size and, restored, the same mtime: only the content tells the change.
            before = big.stat()
            with open(big, "r+b") as handle:
                handle.seek(7 * MiB)
                handle.write(b"overwritten")
            os.utime(big, ns=(before.st_atime_ns, before.st_mtime_ns))
            return digests

        monkeypatch.setattr(uploads_module, hasher, hash_then_rewrite)
        transfer = dataclasses.replace(SMALL_PARTS, checksums=checksums)
        with pytest.raises(SourceError, match="big.bin changed while being published.*SHA-256 differs"):
            publish(tmp_path / "src", bucket=bucket, key="rewritten/", aws_conn_id=admin_conn, transfer=transfer)
        assert objects_below(s3_admin, bucket, "rewritten/") == {}
        assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    def test_large_file_parts_carry_the_first_reads_digests_and_are_not_hashed_again(
        self, tmp_path: Path, bucket: str, admin_conn: str, requests: Recorder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = os.urandom(12 * MiB + 5)
        make_tree(tmp_path / "src", {"big.bin": data})
        hashed: list[int] = []
        real_sha256 = hashlib.sha256

        def counting_sha256(*args: Any) -> Any:
            digest = real_sha256(*args)
            if args:
                hashed.append(len(args[0]))
            return digest

        writers: list[Any] = []
        real_writer = s3_client_module.MultipartWriter

        def recording_writer(*args: Any, **kwargs: Any) -> Any:
            writers.append(real_writer(*args, **kwargs))
            return writers[-1]

        monkeypatch.setattr(multipart_module.hashlib, "sha256", counting_sha256)
        monkeypatch.setattr(s3_client_module, "MultipartWriter", recording_writer)
        publish(tmp_path / "src", bucket=bucket, key="p/", client=requests.client(admin_conn), transfer=SMALL_PARTS)
        # The upload hashed nothing: no part was hashed, and the writer's own running hash saw no byte.
        assert hashed == []
        [writer] = writers
        assert writer.size == len(data)
        assert writer._hash.digest() == real_sha256().digest()
        sent = [headers.get("x-amz-checksum-sha256") for name, headers in requests.seen if name == "UploadPart"]
        expected = [b64(real_sha256(data[i : i + 5 * MiB]).digest()) for i in range(0, len(data), 5 * MiB)]
        assert sorted(sent) == sorted(expected)

    def test_progress_reaches_the_source_totals(self, tmp_path: Path, bucket: str, admin_conn: str) -> None:
        data = os.urandom(12 * MiB + 123)
        make_tree(tmp_path / "big", {"big.bin": data, "small.txt": b"x"})
        seen: list[Snapshot] = []
        publish(
            tmp_path / "big",
            bucket=bucket,
            key="p/",
            aws_conn_id=admin_conn,
            transfer=SMALL_PARTS,
            on_progress=seen.append,
        )
        assert {(s.total_bytes, s.total_files) for s in seen} == {(len(data) + 1, 2)}
        assert [s.bytes for s in seen] == sorted(s.bytes for s in seen)
        assert seen[-1] == Snapshot(len(data) + 1, len(data) + 1, 2, 2)


class TestCompressed:
    def test_one_archive_whose_checksum_is_the_stored_bytes(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str, requests: Recorder
    ) -> None:
        result = publish(source, f"s3://{bucket}/arch/run,opt=compress=true", client=requests.client(admin_conn))
        assert result.key == "arch/run.tar.gz"
        stored = objects_below(s3_admin, bucket)
        assert list(stored) == ["arch/run.tar.gz"]
        assert result.checksum_sha256 == sha256_b64(stored["arch/run.tar.gz"])
        # The archive root is the content of the source: no extra top folder.
        assert archive_members(stored["arch/run.tar.gz"]) == SAMPLE_FILES
        assert requests.names == ["PutObject"]
        head = s3_admin.head_object(Bucket=bucket, Key=result.key)
        assert head["ContentType"] == "application/gzip"
        # Sent in one PUT, the archive carries its own SHA-256 like a plain object.
        assert head["Metadata"]["sha256"] == hashlib.sha256(stored["arch/run.tar.gz"]).hexdigest()

    def test_single_file_sits_at_archive_root(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str
    ) -> None:
        result = publish(source / "stdout", bucket=bucket, key="one.tar.gz", compress=True, aws_conn_id=admin_conn)
        data = s3_admin.get_object(Bucket=bucket, Key=result.key)["Body"].read()
        assert archive_members(data) == {"stdout": SAMPLE_FILES["stdout"]}

    @pytest.mark.parametrize("spool", [False, True], ids=["streamed", "spooled"])
    def test_multipart_archive_checksum_is_of_the_whole_object(
        self,
        spool: bool,
        tmp_path: Path,
        bucket: str,
        s3_admin: S3Client,
        admin_conn: str,
        requests: Recorder,
    ) -> None:
        files = {"random.bin": os.urandom(11 * MiB), "a.txt": b"a" * 1000}
        make_tree(tmp_path / "src", files)
        transfer = dataclasses.replace(SMALL_PARTS, spool_archives=spool)
        result = publish(
            tmp_path / "src",
            bucket=bucket,
            key="mp",
            compress=True,
            client=requests.client(admin_conn),
            transfer=transfer,
        )
        stored = s3_admin.get_object(Bucket=bucket, Key=result.key)["Body"].read()
        assert requests.names.count("UploadPart") >= 3
        assert set(requests.names) <= PUT_ONLY
        # S3's own multipart checksum is a checksum of part checksums; ours is of the object.
        assert result.checksum_sha256 == sha256_b64(stored)
        assert archive_members(stored) == files
        metadata = s3_admin.head_object(Bucket=bucket, Key=result.key)["Metadata"]
        if spool:
            # Compressed to disk first, its digest was known before its metadata left.
            assert metadata["sha256"] == hashlib.sha256(stored).hexdigest()
        else:
            # Its metadata left before its bytes were compressed: the digest is in the result only.
            assert "sha256" not in metadata

    def test_spool_on_a_full_disk_publishes_nothing(
        self,
        source: Path,
        bucket: str,
        s3_admin: S3Client,
        admin_conn: str,
        requests: Recorder,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        class FullDisk(io.BytesIO):
            def write(self, data: Any, /) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(uploads_module.tempfile, "TemporaryFile", lambda **_: FullDisk())
        spooled = dataclasses.replace(SMALL_PARTS, spool_archives=True)
        with pytest.raises(PublishError, match="nothing was published .*spooling the archive .*No space left"):
            publish(
                source, bucket=bucket, key="full", compress=True, client=requests.client(admin_conn), transfer=spooled
            )
        assert requests.names == []
        assert objects_below(s3_admin, bucket) == {}

    def test_versioned_bucket_gives_the_version_of_each_publish(
        self, tmp_path: Path, versioned_bucket: str, s3_admin: S3Client, admin_conn: str
    ) -> None:
        results = []
        for text in (b"first\n", b"second\n"):
            src = make_tree(tmp_path / text.decode().strip(), {"out.txt": text})
            results.append(publish(src, bucket=versioned_bucket, key="same", compress=True, aws_conn_id=admin_conn))
        first, second = results
        assert first.key == second.key
        assert first.version_id
        assert second.version_id
        assert first.version_id != second.version_id
        for result, text in zip(results, (b"first\n", b"second\n"), strict=True):
            data = s3_admin.get_object(Bucket=versioned_bucket, Key=result.key, VersionId=result.version_id)
            assert sha256_b64(data["Body"].read()) == result.checksum_sha256
            dest = fetch(result, tmp_path / f"fetched-{result.version_id}", aws_conn_id=admin_conn)
            assert read_tree(dest) == {"out.txt": text}

    def test_unversioned_bucket_gives_empty_version(self, source: Path, bucket: str, admin_conn: str) -> None:
        assert publish(source, bucket=bucket, key="k", compress=True, aws_conn_id=admin_conn).version_id == ""

    def test_server_rejects_bytes_that_do_not_match_the_sent_checksum(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(s3_client_module, "b64", lambda digest: sha256_b64(b"not these bytes"))
        with pytest.raises(PublishError, match="BadDigest") as err:
            publish(source, bucket=bucket, key="k", compress=True, aws_conn_id=admin_conn)
        assert isinstance(err.value.__cause__, S3RequestError)
        assert err.value.__cause__.code == "BadDigest"
        assert objects_below(s3_admin, bucket) == {}


class TestLeastPrivilege:
    @pytest.mark.parametrize("compress", [False, True])
    def test_write_only_credentials_can_publish(
        self,
        source: Path,
        writer_conn: str,
        s3_admin: S3Client,
        compress: bool,
        requests: Recorder,
    ) -> None:
        key = f"least-privilege-{compress}"
        result = publish(
            source, bucket=WRITE_ONLY_BUCKET, key=key, compress=compress, client=requests.client(writer_conn)
        )
        assert set(requests.names) <= PUT_ONLY
        assert objects_below(s3_admin, WRITE_ONLY_BUCKET, result.key)

    def test_write_only_credentials_can_publish_multipart(
        self, tmp_path: Path, writer_conn: str, s3_admin: S3Client
    ) -> None:
        make_tree(tmp_path / "src", {"r.bin": os.urandom(11 * MiB)})
        result = publish(
            tmp_path / "src",
            bucket=WRITE_ONLY_BUCKET,
            key="mp-writer",
            compress=True,
            aws_conn_id=writer_conn,
            transfer=SMALL_PARTS,
        )
        data = s3_admin.get_object(Bucket=WRITE_ONLY_BUCKET, Key=result.key)["Body"].read()
        assert sha256_b64(data) == result.checksum_sha256

    def test_a_retry_with_write_only_credentials_still_publishes(
        self, tmp_path: Path, writer_conn: str, s3_admin: S3Client, requests: Recorder
    ) -> None:
        # Try 2 looks for uploads its predecessor left; write-only credentials may not list them.
        make_tree(tmp_path / "src", {"r.bin": os.urandom(6 * MiB)})
        context = {"run_id": "r", "ti": type("TI", (), {"dag_id": "d", "task_id": "t", "try_number": 2})()}
        result = publish(
            tmp_path / "src",
            bucket=WRITE_ONLY_BUCKET,
            key="retry-writer",
            compress=True,
            context=context,
            client=requests.client(writer_conn),
            transfer=SMALL_PARTS,
        )
        assert requests.names[0] == "ListMultipartUploads"
        assert set(requests.names[1:]) <= PUT_ONLY
        data = s3_admin.get_object(Bucket=WRITE_ONLY_BUCKET, Key=result.key)["Body"].read()
        assert sha256_b64(data) == result.checksum_sha256

    def test_missing_permission_names_permission_and_bucket(self, source: Path, writer_conn: str, bucket: str) -> None:
        with pytest.raises(PublishError, match=rf"s3:PutObject on arn:aws:s3:::{bucket}/denied/") as err:
            publish(source, bucket=bucket, key="denied", aws_conn_id=writer_conn)
        assert isinstance(err.value.__cause__, S3RequestError)
        assert err.value.__cause__.code == "AccessDenied"

    def test_bad_credentials_fail_clearly_without_leaking_the_secret(
        self, source: Path, bucket: str, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        wrong = Identity("nobody", ADMIN.access_key, "Wrong-Secret-Value-123456", ())
        conn = use_connection(monkeypatch, "s3_wrong", seaweed, wrong)
        with pytest.raises(PublishError, match="SignatureDoesNotMatch") as err:  # a known key, a wrong secret
            publish(source, bucket=bucket, key="k", compress=True, aws_conn_id=conn)
        assert "Wrong-Secret-Value-123456" not in str(err.value)
        assert "Wrong-Secret-Value-123456" not in str(err.value.__cause__)


class TestCredentialsAndEndpoint:
    def test_default_chain_when_the_connection_does_not_exist(
        self, source: Path, bucket: str, seaweed: SeaweedServer, s3_admin: S3Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ADMIN.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ADMIN.secret_key)
        monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CONN", raising=False)
        result = publish(
            source,
            bucket=bucket,
            key="env",
            endpoint=seaweed.endpoint,
            region="eu-west-1",
            aws_conn_id="no_such_conn",
        )
        assert (result.endpoint, result.region) == (seaweed.endpoint, "eu-west-1")
        assert len(objects_below(s3_admin, bucket, "env/")) == len(SAMPLE_FILES)

    def test_endpoint_and_region_override_the_connection(
        self, source: Path, bucket: str, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        conn = use_connection(monkeypatch, "s3_elsewhere", seaweed, ADMIN)
        # The connection points at a closed port; the explicit endpoint wins.
        monkeypatch.setenv(
            "AIRFLOW_CONN_S3_ELSEWHERE",
            os.environ["AIRFLOW_CONN_S3_ELSEWHERE"].replace(seaweed.endpoint, "http://127.0.0.1:9"),
        )
        result = publish(
            source, f"s3://{bucket}/o,opt=endpoint={seaweed.endpoint},opt=region=ap-south-1", aws_conn_id=conn
        )
        assert (result.endpoint, result.region) == (seaweed.endpoint, "ap-south-1")

    @pytest.mark.parametrize(("configured", "expected"), [(None, "path"), ("virtual", "virtual")])
    def test_custom_endpoints_use_path_style_unless_the_connection_says_otherwise(
        self, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, configured: str | None, expected: str
    ) -> None:
        extra = {"config_kwargs": {"s3": {"addressing_style": configured}}} if configured else {}
        conn_id = use_connection(monkeypatch, "s3_style", seaweed, ADMIN, **extra)
        client = connect(conn_id)
        assert client.raw.meta.config.s3["addressing_style"] == expected
        assert client.addressing_style == expected

    def test_unreachable_endpoint_fails_in_bounded_time(
        self, source: Path, admin_conn: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
    ) -> None:
        options = TransferOptions(max_attempts=2, connect_timeout=1, read_timeout=2)
        with pytest.raises(PublishError, match="EndpointConnectionError"):  # nothing listens on loopback port 9
            publish(
                source,
                bucket="some-bucket",
                key="k",
                endpoint="http://127.0.0.1:9",
                aws_conn_id=admin_conn,
                transfer=options,
            )
        # Once Airflow has configured logging (structlog), records reach stdout rather than caplog.
        logged = caplog.text + capsys.readouterr().out
        assert "PutObject attempt 1 of 2 failed (EndpointConnectionError); retrying with backoff" in logged


class TestNothingHalfPublished:
    def test_empty_source_refused_by_default(self, tmp_path: Path, bucket: str, admin_conn: str) -> None:
        (tmp_path / "empty").mkdir()
        with pytest.raises(SourceError, match="no file to publish"):
            publish(tmp_path / "empty", bucket=bucket, key="k", aws_conn_id=admin_conn)

    def test_empty_source_allowed_gives_an_empty_archive(
        self, tmp_path: Path, bucket: str, s3_admin: S3Client, admin_conn: str
    ) -> None:
        (tmp_path / "empty").mkdir()
        result = publish(
            tmp_path / "empty", bucket=bucket, key="k", compress=True, allow_empty=True, aws_conn_id=admin_conn
        )
        assert archive_members(s3_admin.get_object(Bucket=bucket, Key=result.key)["Body"].read()) == {}

    def test_bad_key_refused_before_any_upload(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str, requests: Recorder
    ) -> None:
        longest = len(f"k/{'x' * 1010}/outputs/nested/deep/file.bin")  # the deepest file's object key
        with pytest.raises(InvalidSpecError, match=rf"is {longest} bytes once rendered; S3 allows at most 1024 bytes"):
            publish(source, bucket=bucket, key="k/" + "x" * 1010, client=requests.client(admin_conn))
        assert requests.names == []

    @pytest.mark.parametrize("compress", [True, False])
    def test_bad_compression_level_refused_before_any_upload(
        self, compress: bool, source: Path, bucket: str, admin_conn: str, requests: Recorder
    ) -> None:
        with pytest.raises(InvalidSpecError, match="compression_level must be an integer.*got 42"):
            publish(
                source,
                bucket=bucket,
                key="k",
                compress=compress,
                compression_level=42,
                client=requests.client(admin_conn),
            )
        assert requests.names == []


RUN_CONTEXT = {
    "run_id": "manual__2026-11-25T10:00:00+00:00",
    "ti": type("TI", (), {"dag_id": "etl", "task_id": "publish", "id": "ti-1", "map_index": -1, "try_number": 2})(),
}


class TestObjectOptions:
    def test_run_metadata_content_type_and_sha256_on_every_plain_object(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str
    ) -> None:
        result = publish(source, bucket=bucket, key="meta/{jobID}", context=RUN_CONTEXT, aws_conn_id=admin_conn)
        head = s3_admin.head_object(Bucket=bucket, Key=result.key + "outputs/result.csv")
        assert head["ContentType"] == "text/csv"
        assert head["Metadata"] == {
            "airflow-dag-id": "etl",
            "airflow-run-id": "manual__2026-11-25T10:00:00+00:00",
            "airflow-task-id": "publish",
            "airflow-try-number": "2",
            "sha256": hashlib.sha256(SAMPLE_FILES["outputs/result.csv"]).hexdigest(),
        }

    def test_user_metadata_tags_content_type_and_storage_class(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str
    ) -> None:
        options = ObjectOptions(
            metadata={"team": "data"},
            tags={"project": "x y", "tier": "gold"},
            content_type="text/plain",
            storage_class="STANDARD_IA",
        )
        result = publish(source / "stdout", bucket=bucket, key="opts", object_options=options, aws_conn_id=admin_conn)
        key = result.key + "stdout"
        head = s3_admin.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == "text/plain"
        assert head["Metadata"]["team"] == "data"
        tags = s3_admin.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert {t["Key"]: t["Value"] for t in tags} == {"project": "x y", "tier": "gold"}

    def test_encryption_and_bucket_owner_sent_on_every_request(
        self,
        tmp_path: Path,
        bucket: str,
        admin_conn: str,
        s3_admin: S3Client,
        requests: Recorder,
    ) -> None:
        # SeaweedFS does not check account ids, so the proof for the owner is what is sent.
        make_tree(tmp_path / "src", {"r.bin": os.urandom(11 * MiB)})
        options = ObjectOptions(server_side_encryption="AES256", expected_bucket_owner="123456789012")
        result = publish(
            tmp_path / "src",
            bucket=bucket,
            key="enc",
            compress=True,
            object_options=options,
            client=requests.client(admin_conn),
            transfer=SMALL_PARTS,
        )
        assert set(requests.names) == PUT_ONLY - {"PutObject"}
        assert all(h.get("x-amz-expected-bucket-owner") == "123456789012" for _, h in requests.seen)
        create = next(h for name, h in requests.seen if name == "CreateMultipartUpload")
        assert create["x-amz-server-side-encryption"] == "AES256"
        assert s3_admin.head_object(Bucket=bucket, Key=result.key)["ServerSideEncryption"] == "AES256"

    def test_kms_settings_become_put_arguments(self) -> None:
        # No KMS here (SeaweedFS fails aws:kms uploads without one): the arguments are the proof.
        args = ObjectOptions(server_side_encryption="aws:kms", kms_key_id="alias/results").put_args(
            "x.tar.gz", archive=True, metadata={}
        )
        assert (args["ServerSideEncryption"], args["SSEKMSKeyId"]) == ("aws:kms", "alias/results")

    @pytest.mark.parametrize(
        ("kwargs", "problem"),
        [
            ({"metadata": {"na me": "x"}}, "invalid metadata name"),
            ({"metadata": {"k": "caf\u00e9"}}, "printable ASCII"),
            ({"tags": {str(i): "v" for i in range(11)}}, "at most 10"),
            ({"server_side_encryption": "rot13"}, "rot13"),
            ({"kms_key_id": "k"}, "needs server_side_encryption"),
            ({"expected_bucket_owner": "me"}, "12-digit"),
            ({"storage_class": "cheap please"}, "storage_class"),
        ],
    )
    def test_bad_options_refused(self, kwargs: dict[str, Any], problem: str) -> None:
        with pytest.raises(InvalidSpecError, match=problem):
            ObjectOptions(**kwargs)


class TestManifest:
    @pytest.mark.parametrize("engine", ["auto", "boto3"])
    def test_manifest_written_last_and_lists_every_file(
        self,
        source: Path,
        versioned_bucket: str,
        s3_admin: S3Client,
        admin_conn: str,
        seaweed: SeaweedServer,
        engine: str,
    ) -> None:
        with StoreProxy(seaweed.endpoint, lambda request: None) as proxy:  # sees every engine's requests
            client = connect(admin_conn, endpoint=proxy.endpoint, options=TransferOptions(engine=engine))
            result = publish(source, bucket=versioned_bucket, key="m", manifest=True, client=client)
            seen = [(request.method, request.target.split("?")[0]) for request in proxy.requests()]
        manifest_key = result.key + MANIFEST_NAME
        puts = [target for method, target in seen if method == "PUT"]
        assert len(puts) == len(SAMPLE_FILES) + 1
        assert puts[-1] == f"/{versioned_bucket}/{manifest_key}"
        body = s3_admin.get_object(Bucket=versioned_bucket, Key=manifest_key, VersionId=result.version_id)[
            "Body"
        ].read()
        assert result.checksum_sha256 == sha256_b64(body)
        document = json.loads(body)
        assert {e["path"]: (e["size"], e["sha256"]) for e in document["entries"]} == {
            rel: (len(data), sha256_b64(data)) for rel, data in SAMPLE_FILES.items()
        }
        assert all(e["version_id"] for e in document["entries"])

    def test_fetch_verifies_and_refuses_incomplete_or_tampered_prefix(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str, tmp_path: Path
    ) -> None:
        result = publish(source, bucket=bucket, key="m", manifest=True, aws_conn_id=admin_conn)
        assert read_tree(fetch(result, tmp_path / "ok", aws_conn_id=admin_conn)) == SAMPLE_FILES
        s3_admin.put_object(Bucket=bucket, Key=result.key + "stdout", Body=b"tampered\n")
        with pytest.raises(ChecksumMismatchError, match="stdout"):
            fetch(result, tmp_path / "tampered", aws_conn_id=admin_conn)
        s3_admin.delete_object(Bucket=bucket, Key=result.key + "stdout")
        with pytest.raises(FetchError, match="incomplete.*'stdout'"):
            fetch(result, tmp_path / "incomplete", aws_conn_id=admin_conn)
        # Without the pinned checksum, a manifest found below the prefix is still used.
        with pytest.raises(FetchError, match="incomplete"):
            fetch({"Bucket": bucket, "Key": result.key}, tmp_path / "listed", aws_conn_id=admin_conn)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ok", "out"]  # out: the source

    def test_missing_manifest_is_an_incomplete_publish(
        self, source: Path, bucket: str, s3_admin: S3Client, admin_conn: str, tmp_path: Path
    ) -> None:
        result = publish(source, bucket=bucket, key="m", manifest=True, aws_conn_id=admin_conn)
        s3_admin.delete_object(Bucket=bucket, Key=result.key + MANIFEST_NAME)
        with pytest.raises(FetchError, match="promises a manifest"):
            fetch(result, tmp_path / "in", aws_conn_id=admin_conn)

    def test_source_file_with_the_manifest_name_is_refused(self, tmp_path: Path, bucket: str, admin_conn: str) -> None:
        make_tree(tmp_path / "src", {MANIFEST_NAME: b"{}"})
        with pytest.raises(SourceError, match="manifest's name"):
            publish(tmp_path / "src", bucket=bucket, key="m", manifest=True, aws_conn_id=admin_conn)
