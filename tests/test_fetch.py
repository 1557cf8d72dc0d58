"""fetch(): the S3 input source, against a real SeaweedFS server."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ResponseStreamingError

import airflow_s3_publisher.fetching as fetching_module
from airflow_s3_publisher import extract, extract_native, fetch, publish
from airflow_s3_publisher.exceptions import ChecksumMismatchError, S3RequestError, UnsafeArchiveError
from airflow_s3_publisher.options import TransferOptions
from airflow_s3_publisher.progress import Snapshot
from airflow_s3_publisher.s3 import connect
from tests.faultproxy import running_proxy
from tests.support import SAMPLE_FILES, extractor_function, make_tree, read_tree, sha256_b64, use_connection
from tools.seaweed import ADMIN, READER, WRITE_ONLY_BUCKET, SeaweedServer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client


@pytest.fixture
def admin_conn(monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> str:
    return use_connection(monkeypatch, "s3_admin", seaweed, ADMIN)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "out", SAMPLE_FILES)


@pytest.fixture(params=["tarfile", "libarchive"])
def extractor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Fetch archives with each extractor in turn; the test fails if fetch() did not extract with it."""
    function = extractor_function(request.param)
    calls: list[int] = []

    def used(*args: Any, **kwargs: Any) -> extract.ExtractStats:
        calls.append(1)
        return function(*args, **kwargs)

    monkeypatch.setattr(fetching_module, "choose_extractor", lambda log=None: used)
    yield request.param
    assert calls, f"fetch() did not extract with {request.param}"


def snapshot(path: Path) -> dict[str, bytes]:
    """Everything in the directory that holds ``path`` (to show nothing changed, staging included)."""
    return read_tree(path.parent) | {f"dir:{p.name}": b"" for p in path.parent.iterdir()}


@pytest.mark.usefixtures("extractor")
def test_archive_round_trip(source: Path, bucket: str, admin_conn: str, tmp_path: Path) -> None:
    result = publish(source, bucket=bucket, key="rt", compress=True, aws_conn_id=admin_conn)
    dest = fetch(result.to_dict(), tmp_path / "in", aws_conn_id=admin_conn)
    assert dest == tmp_path / "in"
    assert read_tree(dest) == SAMPLE_FILES


def test_archive_without_extract_is_the_stored_object(
    source: Path, bucket: str, admin_conn: str, tmp_path: Path
) -> None:
    result = publish(source, bucket=bucket, key="raw", compress=True, aws_conn_id=admin_conn)
    dest = fetch(result, tmp_path / "in", extract=False, aws_conn_id=admin_conn)
    (only,) = dest.iterdir()
    assert only.name == "raw.tar.gz"
    assert sha256_b64(only.read_bytes()) == result.checksum_sha256


def test_prefix_keeps_relative_paths(source: Path, bucket: str, admin_conn: str, tmp_path: Path) -> None:
    result = publish(source, bucket=bucket, key="plain", aws_conn_id=admin_conn)
    assert read_tree(fetch(result, tmp_path / "in", aws_conn_id=admin_conn)) == SAMPLE_FILES


def test_prefix_filter(source: Path, bucket: str, admin_conn: str, tmp_path: Path) -> None:
    result = publish(source, bucket=bucket, key="plain", aws_conn_id=admin_conn)
    spec = {**result.to_dict()["Params"], "Filter": r"\.(csv|txt)$"}
    fetched = read_tree(fetch(spec, tmp_path / "in", aws_conn_id=admin_conn))
    assert fetched == {k: v for k, v in SAMPLE_FILES.items() if k.endswith((".csv", ".txt"))}
    override = read_tree(fetch(spec, tmp_path / "in2", filter="^stdout$", aws_conn_id=admin_conn))
    assert override == {"stdout": SAMPLE_FILES["stdout"]}


def test_prefix_does_not_take_sibling_prefixes(
    bucket: str, admin_conn: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    s3_admin.put_object(Bucket=bucket, Key="data/a.txt", Body=b"a")
    s3_admin.put_object(Bucket=bucket, Key="data-other/b.txt", Body=b"b")
    assert read_tree(fetch({"Bucket": bucket, "Key": "data/"}, tmp_path / "in", aws_conn_id=admin_conn)) == {
        "a.txt": b"a"
    }


@pytest.mark.parametrize("form", ["base64", "hex", "0xhex"])
def test_checksum_forms_accepted(source: Path, bucket: str, admin_conn: str, tmp_path: Path, form: str) -> None:
    result = publish(source, bucket=bucket, key="forms", compress=True, aws_conn_id=admin_conn)
    raw = base64.b64decode(result.checksum_sha256)
    text = {"base64": result.checksum_sha256, "hex": raw.hex(), "0xhex": "0x" + raw.hex()}[form]
    spec = {**result.to_dict()["Params"], "ChecksumSHA256": text}
    assert read_tree(fetch(spec, tmp_path / "in", aws_conn_id=admin_conn)) == SAMPLE_FILES


@pytest.mark.usefixtures("extractor")
def test_checksum_mismatch_leaves_destination_as_it_was(
    source: Path, bucket: str, admin_conn: str, tmp_path: Path
) -> None:
    result = publish(source, bucket=bucket, key="tamper", compress=True, aws_conn_id=admin_conn)
    dest = make_tree(tmp_path / "keep" / "dest", {"existing.txt": b"mine"})
    before = snapshot(dest)
    wrong = {**result.to_dict()["Params"], "ChecksumSHA256": sha256_b64(b"something else")}
    with pytest.raises(ChecksumMismatchError, match="nothing was written"):
        fetch(wrong, dest, aws_conn_id=admin_conn)
    assert snapshot(dest) == before


@pytest.mark.usefixtures("extractor")
def test_tampered_object_detected(
    source: Path, versioned_bucket: str, admin_conn: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    result = publish(source, bucket=versioned_bucket, key="t", compress=True, aws_conn_id=admin_conn)
    s3_admin.put_object(Bucket=versioned_bucket, Key=result.key, Body=b"replaced")
    # Pinned to its version, the original is still fetched and verified...
    assert read_tree(fetch(result, tmp_path / "a", aws_conn_id=admin_conn)) == SAMPLE_FILES
    # ...while the latest object no longer matches the published checksum.
    latest = {**result.to_dict()["Params"], "VersionID": ""}
    with pytest.raises(ChecksumMismatchError):
        fetch(latest, tmp_path / "b", aws_conn_id=admin_conn)
    assert not (tmp_path / "b").exists()


def test_missing_version_leaves_destination_untouched(
    source: Path, versioned_bucket: str, admin_conn: str, tmp_path: Path
) -> None:
    result = publish(source, bucket=versioned_bucket, key="v", compress=True, aws_conn_id=admin_conn)
    dest = make_tree(tmp_path / "keep" / "dest", {"existing.txt": b"mine"})
    before = snapshot(dest)
    gone = {**result.to_dict()["Params"], "VersionID": "3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY"}
    with pytest.raises(S3RequestError, match="GetObject"):
        fetch(gone, dest, aws_conn_id=admin_conn)
    assert snapshot(dest) == before


def test_read_only_credentials_can_fetch_an_object(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer, admin_conn: str
) -> None:
    result = publish(source, bucket=WRITE_ONLY_BUCKET, key="for-reader", compress=True, aws_conn_id=admin_conn)
    reader = use_connection(monkeypatch, "s3_reader", seaweed, READER)
    assert read_tree(fetch(result, tmp_path / "in", aws_conn_id=reader)) == SAMPLE_FILES


@pytest.mark.parametrize("bad", ["p/../../escape.txt", "p//abs/escape.txt", "p/a/../../../escape.txt"])
def test_keys_that_would_escape_destination_are_refused(
    bucket: str, admin_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    # AWS stores such keys; SeaweedFS refuses them at PutObject, so the listing is where they come from.
    def lists_bad_keys(*_args: object, **_kwargs: object) -> Iterator[tuple[str, int]]:
        yield from [("p/fine.txt", 1), (bad, 1)]

    client = connect(admin_conn)
    monkeypatch.setattr(client, "list_objects", lists_bad_keys)
    dest = tmp_path / "deep" / "in"
    with pytest.raises(UnsafeArchiveError):
        fetch({"Bucket": bucket, "Key": "p/"}, dest, client=client)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep"]


@pytest.mark.usefixtures("extractor")
def test_merges_into_an_existing_destination(source: Path, bucket: str, admin_conn: str, tmp_path: Path) -> None:
    result = publish(source, bucket=bucket, key="m", compress=True, aws_conn_id=admin_conn)
    dest = make_tree(tmp_path / "in", {"mine.txt": b"kept", "stdout": b"old"})
    fetch(result, dest, aws_conn_id=admin_conn)
    assert read_tree(dest) == {**SAMPLE_FILES, "mine.txt": b"kept"}
    assert hashlib.sha256((dest / "stdout").read_bytes()).digest() == hashlib.sha256(SAMPLE_FILES["stdout"]).digest()


@pytest.mark.usefixtures("extractor")
def test_progress_reports_bytes_against_the_object_size(
    source: Path, bucket: str, admin_conn: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    result = publish(source, bucket=bucket, key="bar", compress=True, aws_conn_id=admin_conn)
    stored = s3_admin.head_object(Bucket=bucket, Key=result.key)["ContentLength"]
    seen: list[Snapshot] = []
    fetch(result, tmp_path / "in", aws_conn_id=admin_conn, on_progress=seen.append)
    assert seen, "no progress reported"
    assert {s.total_bytes for s in seen} == {stored}  # the total is known from the first update
    assert [s.bytes for s in seen] == sorted(s.bytes for s in seen)
    assert seen[-1] == Snapshot(bytes=stored, total_bytes=stored, files=1, total_files=1)


def test_progress_of_a_prefix_counts_files_and_bytes(
    source: Path, bucket: str, admin_conn: str, tmp_path: Path
) -> None:
    result = publish(source, bucket=bucket, key="bars", aws_conn_id=admin_conn)
    seen: list[Snapshot] = []
    fetch(result, tmp_path / "in", aws_conn_id=admin_conn, on_progress=seen.append)
    total = sum(len(data) for data in SAMPLE_FILES.values())
    assert {s.total_bytes for s in seen} == {total}
    assert {s.total_files for s in seen} == {len(SAMPLE_FILES)}
    assert seen[-1].bytes == total
    assert seen[-1].files == len(SAMPLE_FILES)


def test_archive_fetch_falls_back_when_libarchive_cannot_load(
    source: Path, bucket: str, admin_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = publish(source, bucket=bucket, key="fallback", compress=True, aws_conn_id=admin_conn)

    def no_library(name: str, *args: object, **kwargs: object) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    extract_native._load.cache_clear()
    lines: list[str] = []

    class Recorder(logging.Logger):
        def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
            lines.append(str(msg) % args)

    try:
        dest = fetch(result, tmp_path / "in", aws_conn_id=admin_conn, logger=Recorder("test"))
    finally:
        extract_native._load.cache_clear()
    assert read_tree(dest) == SAMPLE_FILES
    fallback = [line for line in lines if "Python's tarfile" in line]
    assert len(fallback) == 1
    assert "cannot open shared object file" in fallback[0]


@pytest.mark.usefixtures("extractor")
def test_connection_lost_mid_archive_leaves_destination_as_it_was(
    source: Path, bucket: str, admin_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The body is read ahead in a thread: its failure must surface in fetch(), with nothing left behind.
    # On the boto3 engine the connection breaks inside botocore's body.
    big = make_tree(tmp_path / "big", {f"f{i}.bin": os.urandom(50_000) for i in range(40)})
    result = publish(big, bucket=bucket, key="cut", compress=True, aws_conn_id=admin_conn)

    class Cut:
        def __init__(self, body: Any) -> None:
            self._body = body
            self.read_bytes = 0

        def read(self, n: int = -1) -> bytes:
            if self.read_bytes > 500_000:
                raise ResponseStreamingError(error="Connection broken: IncompleteRead (test)")
            chunk: bytes = self._body.read(min(n, 64 * 1024))
            self.read_bytes += len(chunk)
            return chunk

        def close(self) -> None:
            self._body.close()

    client = connect(admin_conn, options=TransferOptions(engine="boto3"))
    real_get_object = client.raw.get_object

    def cut_get_object(**kwargs: Any) -> Any:
        response = real_get_object(**kwargs)
        return {**response, "Body": Cut(response["Body"])}

    monkeypatch.setattr(client.raw, "get_object", cut_get_object)
    dest = make_tree(tmp_path / "keep" / "dest", {"existing.txt": b"mine"})
    before = snapshot(dest)
    with pytest.raises(S3RequestError, match="IncompleteRead") as caught:
        fetch(result, dest, client=client)
    assert isinstance(caught.value.__cause__, ResponseStreamingError)
    assert snapshot(dest) == before
    assert not any(thread.name == "read-ahead" for thread in threading.enumerate())


@pytest.mark.usefixtures("extractor")
def test_connection_reset_mid_archive_on_the_native_engine_leaves_destination_as_it_was(
    bucket: str, admin_conn: str, tmp_path: Path, seaweed: SeaweedServer
) -> None:
    big = make_tree(tmp_path / "big", {f"f{i}.bin": os.urandom(50_000) for i in range(40)})
    result = publish(big, bucket=bucket, key="reset", compress=True, aws_conn_id=admin_conn)
    dest = make_tree(tmp_path / "keep" / "dest", {"existing.txt": b"mine"})
    before = snapshot(dest)
    # A real connection reset after 500 kB of the body: the body had started, so it is not retried.
    with running_proxy(seaweed.endpoint, cut_response_after=500_000, operations=frozenset({"GetObject"})) as proxy:
        client = connect(admin_conn, endpoint=proxy.endpoint, options=TransferOptions(engine="native"))
        with pytest.raises(S3RequestError, match="GetObject") as caught:
            fetch(result, dest, client=client)
        assert proxy.stats().operations == {"GetObject": 1}
    assert caught.value.bucket == bucket
    assert snapshot(dest) == before
    assert not any(thread.name == "read-ahead" for thread in threading.enumerate())


def test_the_folders_of_a_fetched_prefix_are_made_as_their_first_file_is_handed_out(tmp_path: Path) -> None:
    """The folders of a fetched prefix are made one by one, as the engine takes the requests (on a slow
    disk, making them all first delayed the first GET), each before the first file that needs it."""
    from airflow_s3_publisher.s3 import GetRequest

    paths = [tmp_path / "a" / "1", tmp_path / "a" / "2", tmp_path / "b" / "c" / "3"]
    handed = fetching_module._with_parents(GetRequest(path.name, path) for path in paths)

    assert next(handed).path == paths[0]
    assert (tmp_path / "a").is_dir()
    assert not (tmp_path / "b").exists()  # not made before a request needs it
    assert next(handed).path == paths[1]
    assert next(handed).path == paths[2]
    assert (tmp_path / "b" / "c").is_dir()
    assert next(handed, None) is None
