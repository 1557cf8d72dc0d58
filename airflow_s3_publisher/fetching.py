"""``fetch()``: the S3 input source. Downloads a published result, verifies it and unpacks it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_s3_publisher.exceptions import ChecksumMismatchError, FetchError, S3PublisherError, S3RequestError
from airflow_s3_publisher.extract_native import choose_extractor
from airflow_s3_publisher.manifest import MANIFEST_NAME, ManifestEntry, parse_manifest
from airflow_s3_publisher.naming import ARCHIVE_SUFFIX
from airflow_s3_publisher.packing import DEFAULT_MAX_EXTRACT_BYTES, safe_join
from airflow_s3_publisher.progress import LogLike, Progress, ProgressCallback
from airflow_s3_publisher.readahead import ReadAhead
from airflow_s3_publisher.result import PublishedResult, sha256_digest
from airflow_s3_publisher.s3 import (
    Connection,
    HashingReader,
    MiB,
    TransferOptions,
    b64,
    connect,
    get_object,
    list_keys,
)

log = logging.getLogger(__name__)


def fetch(
    result: PublishedResult | Mapping[str, Any],
    destination: str | os.PathLike[str],
    *,
    aws_conn_id: str | None = "aws_default",
    extract: bool = True,
    filter: str | None = None,  # noqa: A002 - the S3 input source calls it Filter
    max_extract_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
    expected_bucket_owner: str | None = None,
    transfer: TransferOptions | None = None,
    logger: LogLike | None = None,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Download what ``result`` describes into ``destination`` and return ``destination``.

    :param result: a PublishedResult or its dict (also any S3 input source spec: Bucket, Key, Region,
        Endpoint, VersionID, ChecksumSHA256, Filter).
    :param destination: local directory; created if missing. Files land below it.
    :param extract: unpack a ``.tar.gz`` object into ``destination`` (safely: nothing may land outside).
    :param filter: regex searched in each key's path below a prefix; only matching objects are fetched.
        Overrides the result's ``Filter``.
    :param max_extract_bytes: stop extracting (with an error) past this many bytes of content.
    :param expected_bucket_owner: 12-digit account id sent as ExpectedBucketOwner on every request.
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
    spec = result if isinstance(result, PublishedResult) else PublishedResult.from_dict(result)
    pattern = filter if filter is not None else spec.filter
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as err:
        raise FetchError(f"invalid filter regex {pattern!r}: {err}") from None
    options = transfer or TransferOptions()
    target = Path(destination)
    conn = connect(aws_conn_id, endpoint=spec.endpoint, region=spec.region, options=options)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.fetch-", dir=target.parent))
    except OSError as err:
        raise FetchError(f"cannot prepare the destination {target}: {err}") from err
    owner = {"ExpectedBucketOwner": expected_bucket_owner} if expected_bucket_owner else {}
    job = _Fetch(conn, spec, staging, options, owner, logger or log, on_progress)
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
    return target


@dataclass(frozen=True, slots=True)
class _Fetch:
    conn: Connection
    spec: PublishedResult
    staging: Path
    options: TransferOptions
    owner: dict[str, Any]
    logger: LogLike
    on_progress: ProgressCallback | None

    def object(self, *, extract: bool, max_bytes: int) -> None:
        spec = self.spec
        expected = sha256_digest(spec.checksum_sha256) if spec.checksum_sha256 else None
        body, size = get_object(self.conn, spec.bucket, spec.key, spec.version_id, self.owner)
        progress = Progress(spec.uri, total_bytes=size, total_files=1, logger=self.logger, on_update=self.on_progress)
        reader = HashingReader(body, on_bytes=progress.add)
        try:
            if extract and spec.key.endswith(ARCHIVE_SUFFIX):
                try:
                    # Read ahead: receiving and hashing overlap extraction. Closed (its thread joined)
                    # before anything below reads `reader` again.
                    with ReadAhead(reader) as ahead:
                        stats = choose_extractor(self.logger)(ahead, self.staging, max_bytes=max_bytes)
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
            body.close()
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
            listed = [
                (key[len(spec.key) :], size) for key, size in list_keys(self.conn, spec.bucket, spec.key, self.owner)
            ]
            entries = [ManifestEntry(rel, size, "") for rel, size in listed if rel and not rel.endswith("/")]
        else:
            entries = manifest
        wanted = [e for e in entries if regex is None or regex.search(e.path)]
        paths = [(entry, safe_join(self.staging, entry.path)) for entry in wanted]
        progress = Progress(
            spec.uri,
            total_bytes=sum(e.size for e in wanted),
            total_files=len(wanted),
            logger=self.logger,
            on_update=self.on_progress,
        )
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="s3-get") as pool:
            for future in [pool.submit(self._download, entry, path, progress) for entry, path in paths]:
                future.result()
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
            body = get_object(self.conn, spec.bucket, key, spec.version_id, self.owner).stream
        except S3RequestError as err:
            if spec.checksum_sha256:
                raise FetchError(
                    f"the published result promises a manifest at s3://{spec.bucket}/{key}, but it cannot be "
                    f"read: {err}"
                ) from err
            if err.code in ("NoSuchKey", "404", "NotFound"):
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

    def _download(self, entry: ManifestEntry, path: Path, progress: Progress) -> None:
        spec = self.spec
        key = spec.key + entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            body = get_object(self.conn, spec.bucket, key, entry.version_id, self.owner).stream
        except S3RequestError as err:
            if entry.sha256 and err.code in ("NoSuchKey", "NoSuchVersion", "404"):
                raise FetchError(
                    f"the prefix {spec.uri} is incomplete: its manifest lists {entry.path!r}, which is missing "
                    f"({err.code})"
                ) from err
            raise
        reader = HashingReader(body, on_bytes=progress.add)
        try:
            with open(path, "wb") as out:
                while chunk := reader.read(MiB):
                    out.write(chunk)
        finally:
            body.close()
        if entry.sha256 and (reader.size != entry.size or reader.sha256 != sha256_digest(entry.sha256)):
            raise _mismatch(f"s3://{spec.bucket}/{key}", entry.version_id, reader.sha256, entry.sha256)
        progress.add(0, 1)


def _mismatch(uri: str, version_id: str, actual: bytes, expected: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"{uri} (version {version_id or 'latest'}) has SHA-256 {b64(actual)} but the published result "
        f"says {expected}; nothing was written to the destination"
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
