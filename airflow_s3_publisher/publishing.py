"""``publish()``: what the operator runs, usable from any Python code."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_s3_publisher.exceptions import PublishError, S3PublisherError, SourceError
from airflow_s3_publisher.naming import RunInfo, render_key, validate_key
from airflow_s3_publisher.packing import SourceEntry, collect_source, write_tar_gz
from airflow_s3_publisher.progress import LogLike, Progress
from airflow_s3_publisher.result import PublishedResult
from airflow_s3_publisher.s3 import (
    Connection,
    MultipartWriter,
    TransferOptions,
    UploadResult,
    b64,
    connect,
    put_object,
)
from airflow_s3_publisher.spec import PublisherSpec, build_publisher_spec

log = logging.getLogger(__name__)

ARCHIVE_CONTENT_TYPE = "application/gzip"


def publish(
    source: str | os.PathLike[str],
    publisher: str | Mapping[str, Any] | PublisherSpec | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    aws_conn_id: str | None = "aws_default",
    bucket: str | None = None,
    key: str | None = None,
    endpoint: str | None = None,
    region: str | None = None,
    compress: bool | str | None = None,
    compression_level: int | None = None,
    allow_empty: bool = False,
    transfer: TransferOptions | None = None,
    now: datetime | None = None,
    logger: LogLike | None = None,
) -> PublishedResult:
    """Publish ``source`` (a file or a directory) to S3 and describe exactly what was stored.

    :param source: local file or directory. For a directory, every file below it is published.
    :param publisher: Bacalhau's declarative dict ``{"Type": "s3", "Params": {...}}`` or imperative
        URI ``s3://bucket/key,opt=endpoint=...,opt=region=...,opt=compress=true``.
    :param context: the Airflow task context; placeholders other than ``{date}``, ``{time}`` and
        ``{nodeID}`` need it.
    :param aws_conn_id: Airflow AWS connection for credentials; where it has none, boto3's default chain.
    :param bucket: overrides the publisher's bucket; likewise ``key``, ``endpoint``, ``region``, ``compress``.
    :param compression_level: gzip level on zlib's 1-9 scale; ``None`` picks the fast default.
    :param allow_empty: publish an empty source (an empty archive, or no object at all for a plain
        publish) instead of refusing it.
    :param transfer: part size, concurrency, retries, timeouts and checksum settings.
    :param now: the clock reading for ``{date}`` and ``{time}`` (default: now, UTC).
    :returns: the PublishedResult. For an archive it carries the VersionID S3 returned and the base64
        SHA-256 of the whole stored object; for a plain publish both are empty, as in Bacalhau.
    :raises InvalidSpecError: a bad spec, key or placeholder (before anything is read or uploaded).
    :raises SourceError: a bad source, or a file that changed while it was published.
    :raises PublishError: the upload failed; nothing is reported as published.
    """
    logger = logger or log
    options = transfer or TransferOptions()
    spec = build_publisher_spec(publisher, bucket=bucket, key=key, endpoint=endpoint, region=region, compress=compress)
    object_key = render_key(spec.key, compress=spec.compress, run=RunInfo.from_context(context), now=now)
    entries = collect_source(source)
    files = [entry for entry in entries if not entry.is_dir]
    if not files and not allow_empty:
        raise SourceError(
            f"source {os.fspath(source)!r} has no file to publish; pass allow_empty=True to publish "
            "an empty result anyway"
        )
    targets = {object_key: files} if spec.compress else _plain_keys(object_key, files, single=Path(source).is_file())
    conn = connect(aws_conn_id, endpoint=spec.endpoint, region=spec.region, options=options)
    total = sum(entry.size for entry in files)
    logger.info(
        "Publishing %d files (%.1f MB) from %s to s3://%s/%s%s",
        len(files),
        total / 1e6,
        os.fspath(source),
        spec.bucket,
        object_key,
        " as one tar.gz" if spec.compress else "",
    )
    progress = Progress(f"s3://{spec.bucket}/{object_key}", total_bytes=total, total_files=len(files), logger=logger)
    if spec.compress:
        uploaded = _publish_archive(conn, spec.bucket, object_key, entries, options, compression_level, progress)
        result = PublishedResult(
            bucket=spec.bucket,
            key=object_key,
            region=conn.region,
            endpoint=conn.endpoint,
            version_id=uploaded.version_id,
            checksum_sha256=b64(uploaded.sha256),
        )
        stored, stored_bytes = 1, uploaded.size
    else:
        results = _publish_plain(conn, spec.bucket, targets, options, progress)
        result = PublishedResult(bucket=spec.bucket, key=object_key, region=conn.region, endpoint=conn.endpoint)
        stored, stored_bytes = len(results), sum(r.size for r in results)
    seconds = progress.elapsed()
    logger.info(
        "Published %d objects, %d bytes to %s in %.2f s (%.1f MB/s)",
        stored,
        stored_bytes,
        result.uri,
        seconds,
        stored_bytes / max(seconds, 1e-9) / 1e6,
    )
    return result


def _plain_keys(prefix: str, files: Sequence[SourceEntry], *, single: bool) -> dict[str, list[SourceEntry]]:
    """Map each file to its object key, checking every key before any byte is uploaded."""
    targets: dict[str, list[SourceEntry]] = {}
    for entry in files:
        name = Path(entry.relpath).name if single else entry.relpath
        targets[validate_key(prefix + name)] = [entry]
    return targets


def _publish_archive(
    conn: Connection,
    bucket: str,
    key: str,
    entries: Sequence[SourceEntry],
    options: TransferOptions,
    compression_level: int | None,
    progress: Progress,
) -> UploadResult:
    writer = MultipartWriter(conn, bucket, key, options, extra={"ContentType": ARCHIVE_CONTENT_TYPE})
    try:
        write_tar_gz(entries, writer, compression_level=compression_level, on_progress=progress.add)
        return writer.close()
    except BaseException as err:
        writer.abort()
        if isinstance(err, SourceError):
            raise
        if isinstance(err, S3PublisherError | OSError):
            raise PublishError(f"nothing was published to s3://{bucket}/{key}: {err}") from err
        raise


def _publish_plain(
    conn: Connection,
    bucket: str,
    targets: Mapping[str, list[SourceEntry]],
    options: TransferOptions,
    progress: Progress,
) -> list[UploadResult]:
    small = [(k, e[0]) for k, e in targets.items() if e[0].size <= options.part_size]
    large = [(k, e[0]) for k, e in targets.items() if e[0].size > options.part_size]
    done: list[UploadResult] = []

    def upload_small(item: tuple[str, SourceEntry]) -> UploadResult:
        object_key, entry = item
        result = put_object(conn, bucket, object_key, _read_whole(entry), options=options)
        progress.add(entry.size, 1)
        return result

    try:
        with ThreadPoolExecutor(options.concurrency, thread_name_prefix="s3-put") as pool:
            futures = [pool.submit(upload_small, item) for item in small]
            try:
                for future in futures:
                    done.append(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        for object_key, entry in large:
            done.append(_upload_large_file(conn, bucket, object_key, entry, options, progress))
    except BaseException as err:
        if isinstance(err, S3PublisherError | OSError):
            prefix = next(iter(targets), "")
            raise PublishError(
                f"the plain publish under s3://{bucket}/{prefix.rsplit('/', 1)[0]}/ stopped after "
                f"{len(done)} of {len(targets)} objects: {err}. The prefix is incomplete; a retry of the "
                "task uploads every object again"
            ) from err
        raise
    return done


def _read_whole(entry: SourceEntry) -> bytes:
    """Read a small file, refusing it if it changed since it was listed."""
    with open(entry.path, "rb") as handle:
        data = handle.read(entry.size + 1)
        stat = os.fstat(handle.fileno())
    if len(data) != entry.size or stat.st_size != entry.size or stat.st_mtime != entry.mtime:
        raise SourceError(
            f"{entry.path} changed while being published (listed with {entry.size} bytes, read "
            f"{len(data)}); publish only files that are complete"
        )
    return data


def _upload_large_file(
    conn: Connection,
    bucket: str,
    key: str,
    entry: SourceEntry,
    options: TransferOptions,
    progress: Progress,
) -> UploadResult:
    writer = MultipartWriter(conn, bucket, key, options, on_bytes=lambda n: progress.add(n))
    try:
        with open(entry.path, "rb") as handle:
            remaining = entry.size
            while remaining > 0:
                chunk = handle.read(min(options.part_size, remaining))
                if not chunk:
                    break
                writer.write(chunk)
                remaining -= len(chunk)
            extra = handle.read(1)
            stat = os.fstat(handle.fileno())
        if remaining or extra or stat.st_size != entry.size or stat.st_mtime != entry.mtime:
            raise SourceError(f"{entry.path} changed while being published; publish only files that are complete")
        result = writer.close()
    except BaseException:
        writer.abort()
        raise
    progress.add(0, 1)
    return result
