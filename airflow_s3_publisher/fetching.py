"""``fetch()``: the S3 input source. Downloads a published result, verifies it and unpacks it."""

from __future__ import annotations

import hmac
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow_s3_publisher.exceptions import ChecksumMismatchError, FetchError, S3PublisherError
from airflow_s3_publisher.naming import ARCHIVE_SUFFIX
from airflow_s3_publisher.packing import DEFAULT_MAX_EXTRACT_BYTES, extract_tar_gz, safe_join
from airflow_s3_publisher.progress import LogLike, Progress
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
    transfer: TransferOptions | None = None,
    logger: LogLike | None = None,
) -> Path:
    """Download what ``result`` describes into ``destination`` and return ``destination``.

    :param result: a PublishedResult or its dict (also any S3 input source spec: Bucket, Key, Region,
        Endpoint, VersionID, ChecksumSHA256, Filter).
    :param destination: local directory; created if missing. Files land below it.
    :param extract: unpack a ``.tar.gz`` object into ``destination`` (safely: nothing may land outside).
    :param filter: regex searched in each key's path below a prefix; only matching objects are fetched.
        Overrides the result's ``Filter``.
    :param max_extract_bytes: stop extracting (with an error) past this many bytes of content.
    :returns: ``destination``. A key ending in ``/`` is a prefix: every object below it is downloaded,
        keeping relative paths. Otherwise one object is downloaded (pinned to VersionID when given),
        its SHA-256 is checked against ChecksumSHA256, and on any failure ``destination`` is left
        exactly as it was.
    """
    logger = logger or log
    spec = result if isinstance(result, PublishedResult) else PublishedResult.from_dict(result)
    pattern = filter if filter is not None else spec.filter
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as err:
        raise FetchError(f"invalid filter regex {pattern!r}: {err}") from None
    options = transfer or TransferOptions()
    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(aws_conn_id, endpoint=spec.endpoint, region=spec.region, options=options)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.fetch-", dir=target.parent))
    try:
        if spec.is_prefix:
            count = _fetch_prefix(conn, spec, regex, staging, options, logger)
            logger.info("Fetched %d objects from %s into %s", count, spec.uri, target)
        else:
            _fetch_object(conn, spec, staging, extract=extract, max_bytes=max_extract_bytes, logger=logger)
        _move_into_place(staging, target)
    except S3PublisherError:
        raise
    except OSError as err:
        raise FetchError(f"fetching {spec.uri} into {target} failed: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch_object(
    conn: Connection,
    spec: PublishedResult,
    staging: Path,
    *,
    extract: bool,
    max_bytes: int,
    logger: LogLike,
) -> None:
    expected = sha256_digest(spec.checksum_sha256) if spec.checksum_sha256 else None
    body = get_object(conn, spec.bucket, spec.key, spec.version_id)
    progress = Progress(spec.uri, total_bytes=None, total_files=None, logger=logger)
    reader = HashingReader(body, on_bytes=progress.add)
    try:
        if extract and spec.key.endswith(ARCHIVE_SUFFIX):
            try:
                stats = extract_tar_gz(reader, staging, max_bytes=max_bytes)
            except S3PublisherError as err:
                # Bytes that are not the published archive explain the failure better than its symptom.
                reader.drain()
                if expected is not None and not hmac.compare_digest(reader.sha256, expected):
                    raise _mismatch(spec, reader.sha256) from err
                raise
            reader.drain()
            what = f"{stats.files} files"
        else:
            name = spec.key.rsplit("/", 1)[-1]
            with open(safe_join(staging, name), "wb") as out:
                while chunk := reader.read(MiB):
                    out.write(chunk)
            what = "1 file"
    finally:
        body.close()
    if expected is not None and not hmac.compare_digest(reader.sha256, expected):
        raise _mismatch(spec, reader.sha256)
    if expected is None:
        logger.warning("%s has no ChecksumSHA256 to verify against; fetched without verification", spec.uri)
    logger.info("Fetched %s (%d bytes, %s) in %.2f s", spec.uri, reader.size, what, progress.elapsed())


def _mismatch(spec: PublishedResult, actual: bytes) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"{spec.uri} (version {spec.version_id or 'latest'}) has SHA-256 {b64(actual)} but the "
        f"published result says {spec.checksum_sha256}; nothing was written to the destination"
    )


def _fetch_prefix(
    conn: Connection,
    spec: PublishedResult,
    regex: re.Pattern[str] | None,
    staging: Path,
    options: TransferOptions,
    logger: LogLike,
) -> int:
    wanted: list[tuple[str, Path]] = []
    for key, _size in list_keys(conn, spec.bucket, spec.key):
        relpath = key[len(spec.key) :]
        if not relpath or relpath.endswith("/"):
            continue  # directory markers
        if regex is not None and not regex.search(relpath):
            continue
        wanted.append((key, safe_join(staging, relpath)))
    progress = Progress(spec.uri, total_bytes=None, total_files=len(wanted), logger=logger)

    def download(item: tuple[str, Path]) -> None:
        key, path = item
        path.parent.mkdir(parents=True, exist_ok=True)
        body = get_object(conn, spec.bucket, key)
        try:
            with open(path, "wb") as out:
                while chunk := body.read(MiB):
                    out.write(chunk)
                    progress.add(len(chunk))
        finally:
            body.close()
        progress.add(0, 1)

    with ThreadPoolExecutor(options.concurrency, thread_name_prefix="s3-get") as pool:
        for future in [pool.submit(download, item) for item in wanted]:
            future.result()
    return len(wanted)


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
