"""``publish()``: what the operator runs, usable from any Python code."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.exceptions import PublishError, S3PublisherError, SourceError
from airflow_s3_publisher.manifest import MANIFEST_NAME, ManifestEntry, build_manifest
from airflow_s3_publisher.naming import ARCHIVE_SUFFIX, RunInfo, render_key, validate_key
from airflow_s3_publisher.options import ObjectOptions
from airflow_s3_publisher.packing import (
    SourceEntry,
    changed_error,
    check_compression_level,
    check_unchanged,
    collect_source,
    hash_listed,
    open_listed,
    read_listed,
    write_tar_gz,
)
from airflow_s3_publisher.progress import LogLike, Progress, ProgressCallback
from airflow_s3_publisher.result import PublishedResult
from airflow_s3_publisher.s3 import (
    Connection,
    HashingWriter,
    MultipartWriter,
    TransferOptions,
    UploadResult,
    abort_stale_uploads,
    b64,
    connect,
    put_object,
)
from airflow_s3_publisher.spec import PublisherSpec, build_publisher_spec

if TYPE_CHECKING:
    from airflow_s3_publisher.cancel import Cancellation

log = logging.getLogger(__name__)

#: User metadata entry with an object's hex SHA-256 (``x-amz-meta-sha256``).
DIGEST_METADATA = "sha256"

#: Bytes of small files read whole and held in memory at once across the upload threads.
MEMORY_BUDGET = 64 * 1024 * 1024


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
    manifest: bool = False,
    allow_empty: bool = False,
    object_options: ObjectOptions | None = None,
    transfer: TransferOptions | None = None,
    now: datetime | None = None,
    logger: LogLike | None = None,
    on_progress: ProgressCallback | None = None,
    cancellation: Cancellation | None = None,
) -> PublishedResult:
    """Publish ``source`` (a file or a directory) to S3 and describe exactly what was stored.

    :param source: local file or directory. For a directory, every file below it is published.
    :param publisher: Bacalhau's declarative dict ``{"Type": "s3", "Params": {...}}`` or imperative
        URI ``s3://bucket/key,opt=endpoint=...,opt=region=...,opt=compress=true``.
    :param context: the Airflow task context; placeholders other than ``{date}``, ``{time}`` and
        ``{nodeID}`` need it, and it names the run in each object's metadata.
    :param aws_conn_id: Airflow AWS connection for credentials; where it has none, boto3's default chain.
    :param bucket: overrides the publisher's bucket; likewise ``key``, ``endpoint``, ``region``, ``compress``.
    :param compression_level: gzip level on zlib's 1-9 scale; ``None`` picks the fast default.
    :param manifest: for a plain publish, write a manifest (``<prefix>.s3-publisher-manifest.json``) after
        every file, listing path, size and SHA-256 of each; the result then carries the manifest's
        VersionID and SHA-256, so ``fetch`` verifies every file and refuses an incomplete prefix.
    :param allow_empty: publish an empty source (an empty archive, or no object at all for a plain
        publish) instead of refusing it.
    :param object_options: metadata, tags, content type, storage class, encryption, bucket owner.
    :param transfer: part size, concurrency, retries, timeouts and checksum settings.
    :param now: the clock reading for ``{date}`` and ``{time}`` (default: now, UTC).
    :param logger: where progress lines (every 10 s) and the summary go; this module's logger by default.
    :param on_progress: called with a :class:`~airflow_s3_publisher.progress.Snapshot` (source bytes and
        files done of their totals) about ten times a second, from the upload threads, and once at the end.
    :param cancellation: lets another thread (an operator's ``on_kill``) stop this publish: its
        ``cancel()`` aborts the multipart uploads in flight, and the publish then raises PublishError.
    :returns: the PublishedResult. For an archive it carries the VersionID S3 returned and the base64
        SHA-256 of the whole stored object; for a plain publish both are empty, as in Bacalhau (or
        the manifest's, with ``manifest=True``).
    :raises InvalidSpecError: a bad spec, key or placeholder (before anything is read or uploaded).
    :raises SourceError: a bad source, or a file that changed while it was published.
    :raises PublishError: the upload failed; nothing is reported as published.
    """
    logger = logger or log
    check_compression_level(compression_level)
    options = transfer or TransferOptions()
    objects = object_options or ObjectOptions()
    spec = build_publisher_spec(publisher, bucket=bucket, key=key, endpoint=endpoint, region=region, compress=compress)
    run = RunInfo.from_context(context)
    object_key = render_key(spec.key, compress=spec.compress, run=run, now=now)
    entries = collect_source(source)
    files = [entry for entry in entries if not entry.is_dir]
    if not files and not allow_empty:
        raise SourceError(
            f"source {os.fspath(source)!r} has no file to publish; pass allow_empty=True to publish "
            "an empty result anyway"
        )
    # A retry (Airflow's try 2+) first aborts multipart uploads its failed predecessor could not.
    is_retry = run.try_number is not None and run.try_number > 1
    if cancellation is not None:
        cancellation.check()
    job = _Job(
        spec.bucket, object_key, options, objects, _run_metadata(run), logger, is_retry, datetime.now(UTC), cancellation
    )
    plain = {} if spec.compress else _plain_keys(object_key, files, single=Path(source).is_file(), manifest=manifest)
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
    progress = Progress(
        f"s3://{spec.bucket}/{object_key}",
        total_bytes=total,
        total_files=len(files),
        logger=logger,
        on_update=on_progress,
    )
    version_id = checksum = ""
    if spec.compress:
        uploaded = job.archive(conn, entries, compression_level, progress)
        version_id, checksum = uploaded.version_id, b64(uploaded.sha256)
        stored, stored_bytes = 1, uploaded.size
    else:
        results = job.plain(conn, plain, progress)
        stored, stored_bytes = len(results), sum(r.size for r in results)
        if manifest:
            written = job.manifest(conn, plain, results)
            version_id, checksum = written.version_id, b64(written.sha256)
            stored += 1
    progress.finish()
    result = PublishedResult(
        bucket=spec.bucket,
        key=object_key,
        region=conn.region,
        endpoint=conn.endpoint,
        version_id=version_id,
        checksum_sha256=checksum,
    )
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


def _run_metadata(run: RunInfo) -> dict[str, str]:
    """Object metadata naming the Airflow run that published it."""
    fields = {
        "airflow-dag-id": run.dag_id,
        "airflow-run-id": run.run_id,
        "airflow-task-id": run.task_id,
        "airflow-try-number": None if run.try_number is None else str(run.try_number),
    }
    return {name: value for name, value in fields.items() if value is not None and value.isascii()}


def _plain_keys(prefix: str, files: Sequence[SourceEntry], *, single: bool, manifest: bool) -> dict[str, SourceEntry]:
    """Map each object key to its file, checking every key before any byte is uploaded."""
    targets: dict[str, SourceEntry] = {}
    for entry in files:
        name = Path(entry.relpath).name if single else entry.relpath
        if manifest and name == MANIFEST_NAME:
            raise SourceError(
                f"{entry.path} has the manifest's name {MANIFEST_NAME!r}; rename it or publish without manifest"
            )
        targets[validate_key(prefix + name)] = entry
    if manifest:
        validate_key(prefix + MANIFEST_NAME)
    return targets


@dataclass(frozen=True, slots=True)
class _Job:
    """One publish: where it goes and what every object carries."""

    bucket: str
    key: str
    options: TransferOptions
    objects: ObjectOptions
    run_metadata: dict[str, str]
    logger: LogLike
    is_retry: bool
    started: datetime
    cancellation: Cancellation | None = None

    def writer(self, conn: Connection, key: str, extra: dict[str, Any], **kwargs: Any) -> MultipartWriter:
        if self.is_retry:
            abort_stale_uploads(conn, self.bucket, key, self.objects.request_args(), self.started)
        writer = MultipartWriter(conn, self.bucket, key, self.options, extra=extra, **kwargs)
        if self.cancellation is not None:
            self.cancellation.track(writer)
        return writer

    def check_cancelled(self, cause: BaseException | None = None) -> None:
        """Raise the cancellation's PublishError (from ``cause``, the failure it provoked) if cancelled."""
        if self.cancellation is not None:
            self.cancellation.check(cause)

    def put_args(self, name: str, *, archive: bool, sha256: bytes | None = None) -> dict[str, Any]:
        metadata = dict(self.run_metadata)
        if sha256 is not None:
            metadata[DIGEST_METADATA] = sha256.hex()
        return self.objects.put_args(name, archive=archive, metadata=metadata)

    def archive(
        self, conn: Connection, entries: Sequence[SourceEntry], level: int | None, progress: Progress
    ) -> UploadResult:
        # The archive's SHA-256 is only known once it is written: in its metadata when it fits in one
        # PUT (or was spooled to disk first), always in the PublishedResult.
        if self.options.spool_archives:
            return self._spooled_archive(conn, entries, level, progress)
        writer = self.writer(conn, self.key, self.put_args(self.key, archive=True), digest_metadata=DIGEST_METADATA)
        return self._complete_archive(
            writer, lambda: write_tar_gz(entries, writer, compression_level=level, on_progress=progress.add)
        )

    def _complete_archive(self, writer: MultipartWriter, fill: Callable[[], object]) -> UploadResult:
        """Run ``fill`` (it writes the archive into ``writer``) and complete the object; on any failure
        the upload is aborted, and S3 or disk errors say that nothing was published."""
        try:
            fill()
            return writer.close()
        except BaseException as err:
            writer.abort()
            self.check_cancelled(err)
            if isinstance(err, S3PublisherError | OSError) and not isinstance(err, SourceError | PublishError):
                raise PublishError(f"nothing was published to s3://{self.bucket}/{self.key}: {err}") from err
            raise

    def _spooled_archive(
        self, conn: Connection, entries: Sequence[SourceEntry], level: int | None, progress: Progress
    ) -> UploadResult:
        """Compress into a temporary file, then upload it with its SHA-256 in the metadata."""
        with tempfile.TemporaryFile(prefix="s3-publisher-", suffix=ARCHIVE_SUFFIX) as spool:
            spooled = HashingWriter(spool)
            try:
                write_tar_gz(entries, spooled, compression_level=level, on_progress=progress.add)
                spool.flush()
                spool.seek(0)
            except OSError as err:
                raise PublishError(
                    f"nothing was published to s3://{self.bucket}/{self.key}: spooling the archive to "
                    f"{tempfile.gettempdir()} failed: {err}"
                ) from err
            writer = self.writer(conn, self.key, self.put_args(self.key, archive=True, sha256=spooled.sha256))

            def upload_spool() -> None:
                buffer = memoryview(bytearray(self.options.part_size))
                while count := spool.readinto(buffer):
                    writer.write(buffer[:count])
                if writer.size != spooled.size or not hmac.compare_digest(writer.sha256, spooled.sha256):
                    raise PublishError(f"the spooled archive for s3://{self.bucket}/{self.key} changed on disk")

            return self._complete_archive(writer, upload_spool)

    def plain(self, conn: Connection, targets: Mapping[str, SourceEntry], progress: Progress) -> list[UploadResult]:
        threshold = self.options.multipart_threshold
        small = [(k, e) for k, e in targets.items() if e.size <= threshold]
        large = [(k, e) for k, e in targets.items() if e.size > threshold]
        done: list[UploadResult] = []

        budget = _ByteBudget(MEMORY_BUDGET)

        def upload_small(item: tuple[str, SourceEntry]) -> UploadResult:
            object_key, entry = item
            self.check_cancelled()
            with budget.hold(entry.size):
                data = _read_whole(entry)
                digest = hashlib.sha256(data).digest()
                extra = self.put_args(entry.relpath, archive=False, sha256=digest)
                result = put_object(
                    conn, self.bucket, object_key, data, options=self.options, extra=extra, sha256=digest
                )
            progress.add(entry.size, 1)
            return result

        try:
            with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="s3-put") as pool:
                futures = [pool.submit(upload_small, item) for item in small]
                try:
                    done.extend(future.result() for future in futures)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
            for object_key, entry in large:
                done.append(self._upload_large_file(conn, object_key, entry, progress))
        except BaseException as err:
            if isinstance(err, S3PublisherError | OSError) and not isinstance(err, SourceError):
                raise PublishError(
                    f"the plain publish under s3://{self.bucket}/{self.key} stopped after {len(done)} of "
                    f"{len(targets)} objects: {err}. The prefix is incomplete (and has no manifest); a retry "
                    "of the task uploads every object again"
                ) from err
            raise
        return done

    def manifest(
        self, conn: Connection, targets: Mapping[str, SourceEntry], results: Sequence[UploadResult]
    ) -> UploadResult:
        """Write the manifest last: its presence says every file before it was stored."""
        entries = [
            ManifestEntry(r.key[len(self.key) :], r.size, b64(r.sha256), r.version_id)
            for r in results
            if r.key in targets
        ]
        self.check_cancelled()  # a cut publish is never reported complete
        body = build_manifest(self.key, entries)
        digest = hashlib.sha256(body).digest()
        extra = self.put_args(MANIFEST_NAME, archive=False, sha256=digest)
        extra["ContentType"] = "application/json"
        try:
            return put_object(
                conn, self.bucket, self.key + MANIFEST_NAME, body, options=self.options, extra=extra, sha256=digest
            )
        except S3PublisherError as err:
            raise PublishError(
                f"every file was stored under s3://{self.bucket}/{self.key} but the manifest was not: {err}"
            ) from err

    def _upload_large_file(self, conn: Connection, key: str, entry: SourceEntry, progress: Progress) -> UploadResult:
        # Metadata goes in CreateMultipartUpload, before any byte is sent: hashing the file first is
        # what lets a multipart object carry its SHA-256 like every other object. The upload hashes
        # again and must agree, or the file changed in between and nothing is completed.
        digest = hash_listed(entry)
        extra = self.put_args(entry.relpath, archive=False, sha256=digest)
        writer = self.writer(conn, key, extra, on_bytes=lambda n: progress.add(n))
        try:
            read_listed(entry, memoryview(bytearray(self.options.part_size)), writer.write)
            if not hmac.compare_digest(writer.sha256, digest):
                raise changed_error(entry, "its SHA-256 differs between two reads")
            result = writer.close()
        except BaseException as err:
            writer.abort()
            self.check_cancelled(err)
            raise
        progress.add(0, 1)
        return result


def _read_whole(entry: SourceEntry) -> bytes:
    """Read a small file, refusing it if it changed since it was listed."""
    with open_listed(entry) as handle:
        data = handle.read(entry.size)
        while len(data) < entry.size and (more := handle.read(entry.size - len(data))):
            data += more  # only after a short read, which is rare
        check_unchanged(entry, handle, entry.size - len(data))
    return data


class _ByteBudget:
    """Bounds the bytes of small files held in memory at once (one file always fits)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        with self._free:
            self._free.wait_for(lambda: self._used == 0 or self._used + size <= self._limit)
            self._used += size
        try:
            yield
        finally:
            with self._free:
                self._used -= size
                self._free.notify_all()
