"""PublishedResult.object_storage_path(): Airflow's ObjectStoragePath (s3fs) reading what publish() stored.

Published by WRITER and read by READER, who may only read and list WRITE_ONLY_BUCKET: the least privilege a
downstream task reading a published result would have.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_s3_publisher import PublishedResult, publish
from airflow_s3_publisher.exceptions import InvalidSpecError, S3PublisherError
from tests.support import SAMPLE_FILES, archive_members, make_tree, sha256_b64, use_connection
from tools.seaweed import READER, REGION, WRITE_ONLY_BUCKET, WRITER, SeaweedServer

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from mypy_boto3_s3 import S3Client

needs_s3fs = pytest.mark.skipif(
    importlib.util.find_spec("s3fs") is None,
    reason="s3fs is not installed (apache-airflow-providers-amazon[s3fs], in the project's objectstorage extra)",
)

# Airflow caches an ObjectStoragePath's filesystem by connection id: ids of their own keep other tests'
# connections of the same name (and other endpoints) out of it.
WRITER_CONN = "objectstorage_writer"
READER_CONN = "objectstorage_reader"


@pytest.fixture
def reader_conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    use_connection(monkeypatch, WRITER_CONN, seaweed, WRITER)
    return use_connection(monkeypatch, READER_CONN, seaweed, READER)


@pytest.fixture
def base_key() -> str:
    """A key prefix of this test's own in the shared WRITE_ONLY_BUCKET."""
    return f"objectstorage/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "out", SAMPLE_FILES)


def files_below(path: ObjectStoragePath) -> dict[str, bytes]:
    """Every file below ``path``, listed and read through ``path`` itself, as relative POSIX path -> content."""
    # By key, not relative_to(): Airflow 3.1's paths keep "conn_id@" in their bucket, which relative_to trips on.
    prefix = path.key.rstrip("/") + "/"
    found: dict[str, bytes] = {}
    for p in path.rglob("*"):
        if p.is_file():
            assert p.key.startswith(prefix), (p.key, prefix)
            found[p.key.removeprefix(prefix)] = p.read_bytes()
    return found


@needs_s3fs
def test_reads_a_published_archive_byte_for_byte(
    reader_conn: str, source: Path, base_key: str, s3_admin: S3Client
) -> None:
    result = publish(source, bucket=WRITE_ONLY_BUCKET, key=f"{base_key}/run", compress=True, aws_conn_id=WRITER_CONN)

    path = result.object_storage_path(conn_id=reader_conn)
    assert (str(path.bucket).rpartition("@")[2], path.key) == (WRITE_ONLY_BUCKET, result.key)  # 3.1: "conn_id@"
    data = path.read_bytes()
    assert sha256_b64(data) == result.checksum_sha256
    assert data == s3_admin.get_object(Bucket=WRITE_ONLY_BUCKET, Key=result.key)["Body"].read()
    assert archive_members(data) == SAMPLE_FILES
    assert path.stat()["size"] == len(data)
    with path.open("rb") as stream:  # a ranged read, as a task streaming a large result would do
        stream.seek(len(data) // 2)
        assert stream.read(64) == data[len(data) // 2 : len(data) // 2 + 64]


@needs_s3fs
def test_a_single_file_published_plainly_is_below_its_prefix(reader_conn: str, source: Path, base_key: str) -> None:
    result = publish(
        source / "outputs" / "result.csv", bucket=WRITE_ONLY_BUCKET, key=f"{base_key}/single", aws_conn_id=WRITER_CONN
    )
    assert result.key == f"{base_key}/single/"  # as in Bacalhau: the key is a prefix, the file keeps its name

    path = result.object_storage_path(conn_id=reader_conn)
    assert files_below(path) == {"result.csv": SAMPLE_FILES["outputs/result.csv"]}
    assert (path / "result.csv").read_text() == SAMPLE_FILES["outputs/result.csv"].decode()


@needs_s3fs
def test_lists_and_reads_a_plain_prefix(reader_conn: str, source: Path, tmp_path: Path, base_key: str) -> None:
    result = publish(source, bucket=WRITE_ONLY_BUCKET, key=f"{base_key}/run/", aws_conn_id=WRITER_CONN)
    # A sibling whose key starts with the same characters must not show up below run/.
    sibling = make_tree(tmp_path / "sibling", {"stdout": b"another run\n"})
    publish(sibling, bucket=WRITE_ONLY_BUCKET, key=f"{base_key}/run2/", aws_conn_id=WRITER_CONN)
    assert result.key == f"{base_key}/run/"

    path = result.object_storage_path(conn_id=reader_conn)
    assert path.is_dir()
    assert files_below(path) == SAMPLE_FILES
    assert sorted(p.name for p in path.iterdir()) == ["outputs", "stdout"]
    assert (path / "outputs" / "nested" / "deep" / "file.bin").read_bytes() == SAMPLE_FILES[
        "outputs/nested/deep/file.bin"
    ]


@needs_s3fs
@pytest.mark.parametrize("elsewhere", ["http://127.0.0.1:9", None], ids=["other-endpoint", "aws"])
def test_a_connection_to_another_endpoint_is_refused(
    monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer, elsewhere: str | None
) -> None:
    result = PublishedResult(WRITE_ONLY_BUCKET, "objectstorage/any.tar.gz", REGION, seaweed.endpoint)
    extra = {"region_name": REGION} | ({"endpoint_url": elsewhere} if elsewhere else {})
    connection = {"conn_type": "aws", "login": READER.access_key, "password": READER.secret_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_OBJECTSTORAGE_ELSEWHERE", json.dumps(connection))

    with pytest.raises(InvalidSpecError) as raised:
        result.object_storage_path(conn_id="objectstorage_elsewhere")
    message = str(raised.value)
    assert seaweed.endpoint in message
    assert "'objectstorage_elsewhere'" in message
    assert (elsewhere or "AWS") in message
    assert READER.secret_key not in message


@needs_s3fs
def test_a_connection_to_the_same_endpoint_with_a_trailing_slash_is_accepted(
    monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer, source: Path, base_key: str
) -> None:
    use_connection(monkeypatch, WRITER_CONN, seaweed, WRITER)
    use_connection(monkeypatch, "objectstorage_slash", seaweed, READER, endpoint_url=seaweed.endpoint + "/")
    result = publish(source / "stdout", bucket=WRITE_ONLY_BUCKET, key=f"{base_key}/stdout", aws_conn_id=WRITER_CONN)

    path = result.object_storage_path(conn_id="objectstorage_slash")
    assert (path / "stdout").read_bytes() == SAMPLE_FILES["stdout"]


def test_names_the_extra_when_s3fs_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # what importlib.util.find_spec reports for a missing package
    with pytest.raises(S3PublisherError, match=r"s3://bkt/a/b\.tar\.gz.*apache-airflow-providers-amazon\[s3fs\]"):
        PublishedResult("bkt", "a/b.tar.gz").object_storage_path()
