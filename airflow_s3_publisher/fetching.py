"""``fetch()``: the S3 input source. Downloads a published result, verifies it and unpacks it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.exceptions import ChecksumMismatchError, FetchError, S3PublisherError, S3RequestError
from airflow_s3_publisher.extract import DEFAULT_MAX_EXTRACT_BYTES
from airflow_s3_publisher.extract_native import choose_extractor
from airflow_s3_publisher.hashing import HashingReader, b64
from airflow_s3_publisher.manifest import MANIFEST_NAME, ManifestEntry, parse_manifest
from airflow_s3_publisher.naming import ARCHIVE_SUFFIX
from airflow_s3_publisher.options import MiB, TransferOptions
from airflow_s3_publisher.paths import safe_join
from airflow_s3_publisher.progress import LogLike, Progress, ProgressCallback
from airflow_s3_publisher.result import PublishedResult, as_source, sha256_digest
from airflow_s3_publisher.s3 import GetRequest, GetResult, S3Client, connect

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_s3_publisher.s3 import Engine, ObjectBody

log = logging.getLogger(__name__)


def fetch(
    result: PublishedResult | Mapping[str, Any] | str | ObjectStoragePath,
    destination: str | os.PathLike[str],
    *,
    aws_conn_id: str | None = "aws_default",
    extract: bool = True,
    filter: str | None = None,  # noqa: A002 - the S3 input source calls it Filter
    max_extract_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
    expected_bucket_owner: str | None = None,
    transfer: TransferOptions | None = None,
    client: S3Client | None = None,
    logger: LogLike | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Download what ``result`` describes into ``destination`` and return ``destination``.

    :param result: a PublishedResult or its dict (also any S3 input source spec: Bucket, Key, Region,
        Endpoint, VersionID, ChecksumSHA256, Filter), its JSON text, an ``s3://bucket/key`` URI or an
        ``ObjectStoragePath`` on S3 (see :func:`~airflow_s3_publisher.result.as_source`).
    :param destination: local directory; created if missing. Files land below it.
    :param extract: unpack a ``.tar.gz`` object into ``destination`` (safely: nothing may land outside).
    :param filter: regex searched in each key's path below a prefix; only matching objects are fetched.
        Overrides the result's ``Filter``.
    :param max_extract_bytes: stop extracting (with an error) past this many bytes of content.
    :param expected_bucket_owner: 12-digit account id sent as ExpectedBucketOwner on every request.
    :param transfer: concurrency, retries, timeouts, checksums and the request engine (with ``client``:
        replaces its concurrency, checksums and engine).
    :param client: an :class:`~airflow_s3_publisher.s3.S3Client` to use instead of building one from
        ``aws_conn_id`` and the result's endpoint and region.
    :param logger: where progress lines (every 10 s), the summary and warnings go; this module's logger
        by default.
    :param on_progress: called with a :class:`~airflow_s3_publisher.progress.Snapshot` (bytes and files
        done, totals when known) about ten times a second while downloading, from the download threads,
        and once at the end; e.g. to draw a progress bar.
    :returns: ``destination``. A key ending in ``/`` is a prefix: every object below it is downloaded,
        keeping relative paths; when the prefix has a manifest (always, when the result carries a
        ChecksumSHA256), every file is checked against it and a missing or altered file is an error.
        Otherwise one object is downloaded (pinned to VersionID when given) and its SHA-256 is checked
        against ChecksumSHA256. On any failure ``destination`` is left exactly as it was.
    """
    spec = as_source(result)
    pattern = filter if filter is not None else spec.filter
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as err:
        raise FetchError(f"invalid filter regex {pattern!r}: {err}") from None
    target = Path(destination)
    owned = client is None  # built here, so closed here (the native engine's stores and their connections)
    if client is None:
        client = connect(aws_conn_id, endpoint=spec.endpoint, region=spec.region, options=transfer)
    else:
        client = client.with_options(transfer)
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.fetch-", dir=target.parent))
        except OSError as err:
            raise FetchError(f"cannot prepare the destination {target}: {err}") from err
        owner = {"ExpectedBucketOwner": expected_bucket_owner} if expected_bucket_owner else {}
        job = _Fetch(client, spec, staging, owner, logger or log, on_progress)
        try:
            if spec.is_prefix:
                job.prefix(regex)
            else:
                job.object(extract=extract, max_bytes=max_extract_bytes)
            _move_into_place(staging, target)
        except S3PublisherError:
            raise
        except OSError as err:
            raise FetchError(f"fetching {spec.uri} into {target} failed: {err}") from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if owned:
            client.close()
    return target


@dataclass(frozen=True, slots=True)
class _Fetch:
    client: S3Client
    spec: PublishedResult
    staging: Path
    owner: dict[str, Any]
    logger: LogLike
    on_progress: ProgressCallback | None

    def _engine(self) -> Engine:
        """The request engine for this fetch's GETs (the native one needs no boto3 client: botocore's
        model loading is most of a small fetch's set-up)."""
        return self.client.engine(self.owner, self.logger, self.spec.bucket)

    def _open(self, key: str) -> ObjectBody:
        """A streaming GET of ``key``, pinned to the result's VersionID, through the request engine."""
        return self._engine().open(self.spec.bucket, key, self.spec.version_id, self.owner)

    def object(self, *, extract: bool, max_bytes: int) -> None:
        spec = self.spec
        expected = sha256_digest(spec.checksum_sha256) if spec.checksum_sha256 else None
        body = self._open(spec.key)
        progress = Progress(
            spec.uri, total_bytes=body.size, total_files=1, logger=self.logger, on_update=self.on_progress
        )
        reader = HashingReader(body.stream, on_bytes=progress.add)
        try:
            if extract and spec.key.endswith(ARCHIVE_SUFFIX):
                try:
                    # The extractor's gunzip thread receives, hashes and inflates ahead of the writes; it
                    # is joined before the extractor returns, so nothing below reads `reader` concurrently.
                    stats = choose_extractor(self.logger)(reader, self.staging, max_bytes=max_bytes)
                except S3PublisherError as err:
                    # Bytes that are not the published archive explain the failure better than its symptom.
                    reader.drain()
                    if expected is not None and not hmac.compare_digest(reader.sha256, expected):
                        raise _mismatch(spec.uri, spec.version_id, reader.sha256, spec.checksum_sha256) from err
                    raise
                reader.drain()
                what = f"{stats.files} files"
            else:
                with open(safe_join(self.staging, spec.key.rsplit("/", 1)[-1]), "wb") as out:
                    while chunk := reader.read(MiB):
                        out.write(chunk)
                what = "1 file"
        finally:
            body.stream.close()
        progress.add(0, 1)
        progress.finish()
        if expected is not None and not hmac.compare_digest(reader.sha256, expected):
            raise _mismatch(spec.uri, spec.version_id, reader.sha256, spec.checksum_sha256)
        if expected is None:
            self.logger.warning("%s has no ChecksumSHA256 to verify against; fetched without verification", spec.uri)
        self.logger.info("Fetched %s (%d bytes, %s) in %.2f s", spec.uri, reader.size, what, progress.elapsed())

    def prefix(self, regex: re.Pattern[str] | None) -> None:
        spec = self.spec
        manifest = self._manifest()
        if manifest is None:
            listed = self.client.list_objects(spec.bucket, spec.key, self.owner)
            entries = [ManifestEntry(key[len(spec.key) :], size, "") for key, size in listed]
            entries = [e for e in entries if e.path and not e.path.endswith("/")]
        else:
            entries = manifest
        wanted = [e for e in entries if regex is None or regex.search(e.path)]
        paths = {entry.path: safe_join(self.staging, entry.path) for entry in wanted}
        progress = Progress(
            spec.uri,
            total_bytes=sum(e.size for e in wanted),
            total_files=len(wanted),
            logger=self.logger,
            on_update=self.on_progress,
        )
        requests = _with_parents(GetRequest(spec.key + e.path, paths[e.path], e.version_id, self.owner) for e in wanted)
        by_path = {entry.path: entry for entry in wanted}

        def verify(result: GetResult) -> None:
            entry = by_path[result.request.key[len(spec.key) :]]
            if entry.sha256 and (result.size != entry.size or result.sha256 != sha256_digest(entry.sha256)):
                uri = f"s3://{spec.bucket}/{result.request.key}"
                raise _mismatch(uri, entry.version_id, result.sha256, entry.sha256)
            progress.add(0, 1)

        try:
            self._engine().get_many(spec.bucket, requests, progress.add, verify)
        except S3RequestError as err:
            if manifest is not None and err.is_not_found:
                missing = (err.key or "")[len(spec.key) :]
                raise FetchError(
                    f"the prefix {spec.uri} is incomplete: its manifest lists {missing!r}, which is missing "
                    f"({err.code})"
                ) from err
            raise
        progress.finish()
        checked = "each checked against the manifest" if manifest is not None else "no manifest to check against"
        self.logger.info(
            "Fetched %d objects (%d bytes) from %s in %.2f s, %s",
            len(wanted),
            progress.bytes,
            spec.uri,
            progress.elapsed(),
            checked,
        )

    def _manifest(self) -> list[ManifestEntry] | None:
        """The prefix's manifest: required (and pinned) when the result has a checksum, else optional."""
        spec = self.spec
        key = spec.key + MANIFEST_NAME
        try:
            body = self._open(key).stream
        except S3RequestError as err:
            if spec.checksum_sha256:
                raise FetchError(
                    f"the published result promises a manifest at s3://{spec.bucket}/{key}, but it cannot be "
                    f"read: {err}"
                ) from err
            if err.is_not_found:
                return None
            raise
        try:
            data = body.read()
        finally:
            body.close()
        if spec.checksum_sha256:
            actual = hashlib.sha256(data).digest()
            if not hmac.compare_digest(actual, sha256_digest(spec.checksum_sha256)):
                raise _mismatch(f"s3://{spec.bucket}/{key}", spec.version_id, actual, spec.checksum_sha256)
        return parse_manifest(data, f"s3://{spec.bucket}/{key}")


def _with_parents(requests: Iterable[GetRequest]) -> Iterator[GetRequest]:
    """``requests``, each after its file's directory was made. The engines take requests as their workers
    free up, so the directories are made while the first files download: on a slow file system, making a
    hundred of them up front could cost more than fetching a thousand small files."""
    made: set[Path] = set()
    for request in requests:
        parent = request.path.parent
        if parent not in made:
            parent.mkdir(parents=True, exist_ok=True)
            made.add(parent)
        yield request


def _mismatch(uri: str, version_id: str, actual: bytes, expected: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"{uri} (version {version_id or 'latest'}) has SHA-256 {b64(actual)} but the published result "
        f"says {expected}; nothing was written to the destination",
        expected=expected,
        actual=b64(actual),
    )


def _move_into_place(staging: Path, target: Path) -> None:
    """Move the verified staging tree into ``target``, merging into an existing directory."""
    if not target.exists():
        os.replace(staging, target)
        staging.mkdir()  # the caller removes it
        return
    if not target.is_dir():
        raise FetchError(f"destination {target} exists and is not a directory")
    for entry in sorted(staging.iterdir()):
        dest = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and dest.is_dir() and not dest.is_symlink():
            _move_into_place(entry, dest)
            continue
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(entry, dest)
