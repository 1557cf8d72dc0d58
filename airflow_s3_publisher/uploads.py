"""Transferring a planned publish: one tar.gz, or one object per file (and a manifest last).

Every object carries the run's metadata and its SHA-256 (``x-amz-meta-sha256``) where S3's API
allows it; a multipart upload that fails is aborted.
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.archive import write_tar_gz
from airflow_s3_publisher.exceptions import PublishError, S3PublisherError, S3RequestError
from airflow_s3_publisher.hashing import HashingWriter, b64
from airflow_s3_publisher.manifest import MANIFEST_NAME, ManifestEntry, build_manifest
from airflow_s3_publisher.naming import ARCHIVE_SUFFIX, RunInfo
from airflow_s3_publisher.s3 import MultipartWriter, PutJob, PutRequest, S3Client, UploadResult
from airflow_s3_publisher.sources import (
    SourceEntry,
    changed_error,
    check_unchanged,
    hash_listed,
    hash_listed_parts,
    open_listed,
    read_listed,
)

if TYPE_CHECKING:
    from airflow_s3_publisher.cancel import Cancellation
    from airflow_s3_publisher.options import ObjectOptions, TransferOptions
    from airflow_s3_publisher.progress import LogLike, Progress

__all__ = ["DIGEST_METADATA", "Uploader", "run_metadata"]

#: User metadata entry with an object's hex SHA-256 (``x-amz-meta-sha256``).
DIGEST_METADATA = "sha256"


def run_metadata(run: RunInfo) -> dict[str, str]:
    """Object metadata naming the Airflow run that published it."""
    fields = {
        "airflow-dag-id": run.dag_id,
        "airflow-run-id": run.run_id,
        "airflow-task-id": run.task_id,
        "airflow-try-number": None if run.try_number is None else str(run.try_number),
    }
    return {name: value for name, value in fields.items() if value is not None and value.isascii()}


@dataclass(frozen=True, slots=True)
class Uploader:
    """Puts one publish's objects into ``bucket``: what every object carries and how it is sent.

    :param is_retry: an Airflow retry (try 2+) first aborts the multipart uploads its failed
        predecessor could not (started before ``started``).
    :param cancellation: stops the publish from outside (an operator's ``on_kill``): every multipart
        upload registers with it, and every step checks it first.
    """

    client: S3Client
    bucket: str
    key: str
    objects: ObjectOptions
    run_metadata: dict[str, str]
    logger: LogLike
    is_retry: bool
    started: datetime
    cancellation: Cancellation | None = None

    @property
    def options(self) -> TransferOptions:
        """The client's transfer options."""
        return self.client.options

    def put_args(self, name: str, *, archive: bool, sha256: bytes | None = None) -> dict[str, Any]:
        """PutObject arguments for the object holding ``name``, with its digest in metadata when known."""
        metadata = dict(self.run_metadata)
        if sha256 is not None:
            metadata[DIGEST_METADATA] = sha256.hex()
        return self.objects.put_args(name, archive=archive, metadata=metadata)

    def check_cancelled(self, cause: BaseException | None = None) -> None:
        """Raise the cancellation's :class:`PublishError` if the publish was cancelled."""
        if self.cancellation is not None:
            self.cancellation.check(cause)

    def _writer(self, key: str, args: dict[str, Any], **kwargs: Any) -> MultipartWriter:
        if self.is_retry:
            self.client.abort_stale_uploads(self.bucket, key, self.objects.request_args(), self.started)
        writer = self.client.multipart(self.bucket, key, args, **kwargs)
        if self.cancellation is not None:
            self.cancellation.track(writer)
        return writer

    # ------------------------------------------------------------------ one archive
    def archive(self, entries: Sequence[SourceEntry], level: int | None, progress: Progress) -> UploadResult:
        """Stream ``entries`` as one tar.gz into one object.

        The archive's SHA-256 is only known once it is written: in its metadata when it fits in one PUT
        (or was spooled to disk first), always in the PublishedResult.
        """
        if self.options.spool_archives:
            return self._spooled_archive(entries, level, progress)
        writer = self._writer(self.key, self.put_args(self.key, archive=True), digest_metadata=DIGEST_METADATA)
        return self._complete(
            writer, lambda: write_tar_gz(entries, writer, compression_level=level, on_progress=progress.add)
        )

    def _spooled_archive(self, entries: Sequence[SourceEntry], level: int | None, progress: Progress) -> UploadResult:
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
            writer = self._writer(self.key, self.put_args(self.key, archive=True, sha256=spooled.sha256))

            def upload_spool() -> None:
                buffer = memoryview(bytearray(self.options.part_size))
                while count := spool.readinto(buffer):
                    writer.write(buffer[:count])
                if writer.size != spooled.size or not hmac.compare_digest(writer.sha256, spooled.sha256):
                    raise PublishError(f"the spooled archive for s3://{self.bucket}/{self.key} changed on disk")

            return self._complete(writer, upload_spool)

    # ------------------------------------------------------------------ one object per file
    def plain(
        self, targets: Mapping[str, SourceEntry], progress: Progress, stored: list[UploadResult]
    ) -> list[UploadResult]:
        """Store each file as its own object; ``stored`` receives each result as it is stored.

        Files up to ``multipart_threshold`` go through the client's engine for many small objects (one
        PutObject each), larger ones as multipart uploads, one after the other.
        """
        threshold = self.options.multipart_threshold
        small = [(key, entry) for key, entry in targets.items() if entry.size <= threshold]
        large = [(key, entry) for key, entry in targets.items() if entry.size > threshold]
        if small:
            engine = self.client.engine(self.put_args(small[0][1].relpath, archive=False), self.logger, self.bucket)

            def on_stored(result: UploadResult) -> None:
                stored.append(result)
                progress.add(result.size, 1)

            engine.put_many(self.bucket, self._small_jobs(small), on_stored)
        for key, entry in large:
            stored.append(self._large_file(key, entry, progress))
        return stored

    def _small_jobs(self, small: Sequence[tuple[str, SourceEntry]]) -> Iterator[PutJob]:
        for key, entry in small:
            yield PutJob(entry.size, lambda key=key, entry=entry: self._small_request(key, entry))  # type: ignore[misc]

    def _small_request(self, key: str, entry: SourceEntry) -> PutRequest:
        self.check_cancelled()
        data = _read_whole(entry)
        digest = hashlib.sha256(data).digest()
        return PutRequest(key, data, digest, self.put_args(entry.relpath, archive=False, sha256=digest))

    def _large_file(self, key: str, entry: SourceEntry, progress: Progress) -> UploadResult:
        # Metadata goes in CreateMultipartUpload, before any byte is sent: hashing the file first is
        # what lets a multipart object carry its SHA-256 like every other object. With checksums on,
        # that read also hashes each part, and S3 checks every part it receives against it: a file that
        # changed in between is refused part by part, with no second hash of the whole. Without them,
        # the upload hashes again and must agree.
        part_size = self.options.part_size
        parts: list[bytes] = []
        if self.options.checksums:
            digest, parts = hash_listed_parts(entry, part_size)
        else:
            digest = hash_listed(entry)
        args = self.put_args(entry.relpath, archive=False, sha256=digest)
        writer = self._writer(
            key, args, on_bytes=progress.add, part_sha256=parts, object_sha256=digest if parts else b""
        )

        def send() -> None:
            read_listed(entry, memoryview(bytearray(part_size)), writer.write)
            if not parts and not hmac.compare_digest(writer.sha256, digest):  # with parts, S3 checks
                raise changed_error(entry, "its SHA-256 differs between two reads")

        try:
            result = self._complete(writer, send)
        except S3RequestError as err:
            # A part refused for its checksum is most likely the file changed since it was hashed.
            if parts and hash_listed(entry) != digest:
                raise changed_error(entry, "its SHA-256 differs between two reads") from err
            raise
        progress.add(0, 1)
        return result

    def _complete(self, writer: MultipartWriter, fill: Callable[[], object]) -> UploadResult:
        """Run ``fill`` (it writes the object into ``writer``) and complete the object; abort it on any failure.

        A failure a cancellation provoked is reported as the cancellation (with the failure as its cause).
        """
        try:
            fill()
            return writer.close()
        except BaseException as err:
            writer.abort()
            self.check_cancelled(err)
            raise

    def manifest(self, targets: Mapping[str, SourceEntry], results: Sequence[UploadResult]) -> UploadResult:
        """Write the manifest last: its presence says every file before it was stored."""
        self.check_cancelled()
        entries = [
            ManifestEntry(r.key[len(self.key) :], r.size, b64(r.sha256), r.version_id)
            for r in results
            if r.key in targets
        ]
        body = build_manifest(self.key, entries)
        digest = hashlib.sha256(body).digest()
        args = self.put_args(MANIFEST_NAME, archive=False, sha256=digest)
        args["ContentType"] = "application/json"
        request = PutRequest(self.key + MANIFEST_NAME, body, digest, args)
        try:
            # Through the engine the files went: on the native one, no boto3 client is made for it.
            (result,) = self.client.engine(args, self.logger, self.bucket).put_many(
                self.bucket, [PutJob(len(body), lambda: request)], lambda _result: None
            )
            return result
        except S3PublisherError as err:
            raise PublishError(
                f"every file was stored under s3://{self.bucket}/{self.key} but the manifest was not: {err}"
            ) from err


def _read_whole(entry: SourceEntry) -> bytes:
    """Read a small file, refusing it if it changed since it was listed."""
    with open_listed(entry) as handle:
        data = handle.read(entry.size)
        while len(data) < entry.size and (more := handle.read(entry.size - len(data))):
            data += more  # only after a short read, which is rare
        check_unchanged(entry, handle, entry.size - len(data))
    return data
