"""One object written as a stream: buffered into parts, uploaded in parallel, completed or aborted."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from airflow_s3_publisher.exceptions import PublishError, S3RequestError
from airflow_s3_publisher.hashing import b64
from airflow_s3_publisher.s3.errors import translate_errors
from airflow_s3_publisher.s3.objects import UploadResult

if TYPE_CHECKING:
    from airflow_s3_publisher.options import TransferOptions
    from airflow_s3_publisher.s3.client import S3Client

__all__ = ["MAX_PARTS", "MultipartWriter"]

log = logging.getLogger(__name__)

#: S3 refuses more parts than this in one multipart upload.
MAX_PARTS = 10_000


@dataclass
class MultipartWriter:
    """A write-only stream that stores what is written as ONE object, hashing every byte.

    Bytes are cut into parts of ``options.part_size`` and uploaded in parallel (at most
    ``options.concurrency`` parts in flight, so memory stays bounded) while the producer keeps
    writing. If everything fits in one part, ``close()`` sends a single PutObject instead, and then
    ``digest_metadata``, when set, names a user-metadata entry that receives the object's hex SHA-256
    (a multipart upload's metadata is sent before any byte, so it cannot). On any error the multipart
    upload is aborted, so no incomplete upload is left behind. ``check``, when set, is called before
    every request is started and raises to stop the upload (a cancelled publish).

    ``part_sha256`` and ``object_sha256``, when given, are the digests of each part and of the whole
    object, computed beforehand from the same source: nothing written is hashed again, and each part is
    sent with its given checksum, so S3 refuses a part whose bytes differ from those first hashed.
    """

    client: S3Client
    bucket: str
    key: str
    options: TransferOptions
    extra: dict[str, Any] = field(default_factory=dict)
    on_bytes: Callable[[int], None] | None = None
    digest_metadata: str = ""
    check: Callable[[], None] | None = None
    part_sha256: Sequence[bytes] = ()
    object_sha256: bytes = b""
    _buffer: bytearray = field(default_factory=bytearray, init=False)
    """The part being filled: grows while it may still be the only one, then a recycled whole part."""
    _filled: int = field(default=0, init=False)
    _spare: list[bytearray] = field(default_factory=list, init=False)
    """Whole-part buffers whose upload finished, reused: no 8 MiB allocation (and heap growth) per part."""
    _hash: Any = field(default_factory=hashlib.sha256, init=False)
    _size: int = field(default=0, init=False)
    _upload_id: str = field(default="", init=False)
    _parts: list[Future[dict[str, Any]]] = field(default_factory=list, init=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)
    _slots: threading.BoundedSemaphore | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)
    _cancelled: bool = field(default=False, init=False)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data``; full parts are handed to upload threads."""
        if self._closed:
            raise PublishError(f"the upload of s3://{self.bucket}/{self.key} was already completed or aborted")
        if not self.object_sha256:
            self._hash.update(data)
        self._size += len(data)
        part_size = self.options.part_size
        view = memoryview(data).cast("B")
        if not self._upload_id and len(self._buffer) + len(view) <= part_size:
            self._buffer += view  # perhaps the only part: only as large as it needs to be
            self._filled = len(self._buffer)
            return len(data)
        while view:
            if len(self._buffer) != part_size:  # from now on, whole parts: a fixed-size buffer
                whole = self._spare.pop() if self._spare else bytearray(part_size)
                whole[: self._filled] = self._buffer[: self._filled]
                self._buffer = whole
            take = min(part_size - self._filled, len(view))
            self._buffer[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == part_size:
                full, self._buffer, self._filled = self._buffer, bytearray(), 0
                self._submit(full)
        return len(data)

    def _pending(self) -> bytes:
        """The bytes of the part being filled."""
        return bytes(memoryview(self._buffer)[: self._filled])

    @property
    def sha256(self) -> bytes:
        """SHA-256 of every byte written so far (the whole object once closed); ``object_sha256`` if given."""
        return self.object_sha256 or bytes(self._hash.digest())

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def _submit(self, chunk: bytes | bytearray) -> None:
        if self.check is not None:
            self.check()
        if not self._upload_id:
            args: dict[str, Any] = dict(self.extra)
            if self.options.checksums:
                args["ChecksumAlgorithm"] = "SHA256"
            with translate_errors("CreateMultipartUpload", self.bucket, self.key):
                response = self.client.raw.create_multipart_upload(Bucket=self.bucket, Key=self.key, **args)
            self._upload_id = response["UploadId"]
            self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="s3-part")
            self._slots = threading.BoundedSemaphore(self.options.parts_in_memory)
        if len(self._parts) >= MAX_PARTS:
            raise PublishError(
                f"s3://{self.bucket}/{self.key} needs more than {MAX_PARTS} parts of {self.options.part_size} "
                "bytes; raise TransferOptions(part_size=...)"
            )
        assert self._pool is not None
        assert self._slots is not None
        self._raise_failed_part()
        self._slots.acquire()  # bounds the parts held in memory
        try:
            if self.check is not None:  # cancelled while waiting for a slot?
                self.check()
        except BaseException:
            self._slots.release()
            raise
        number = len(self._parts) + 1
        future = self._pool.submit(self._upload_part, number, chunk)
        future.add_done_callback(lambda _f: self._part_done(chunk))
        self._parts.append(future)

    def _part_done(self, chunk: bytes | bytearray) -> None:
        if isinstance(chunk, bytearray) and len(chunk) == self.options.part_size and not self._closed:
            self._spare.append(chunk)
        if self._slots is not None:
            self._slots.release()

    def _raise_failed_part(self) -> None:
        for future in self._parts:
            if future.done() and future.exception() is not None:
                future.result()

    def _request_args(self) -> dict[str, Any]:
        return {k: v for k, v in self.extra.items() if k == "ExpectedBucketOwner"}

    def _upload_part(self, number: int, chunk: bytes | bytearray) -> dict[str, Any]:
        args = self._request_args()
        if self.options.checksums:
            args["ChecksumSHA256"] = b64(self._part_digest(number, chunk))
        with translate_errors("UploadPart", self.bucket, self.key):
            response = self.client.raw.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=cast("bytes", chunk),  # botocore takes a bytearray too (its stubs do not say so)
                **args,
            )
        if self.on_bytes is not None:
            self.on_bytes(len(chunk))
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if self.options.checksums:
            part["ChecksumSHA256"] = args["ChecksumSHA256"]
        return part

    def _part_digest(self, number: int, chunk: bytes | bytearray) -> bytes:
        if not self.part_sha256:
            return hashlib.sha256(chunk).digest()
        if number > len(self.part_sha256):
            raise PublishError(
                f"s3://{self.bucket}/{self.key} received more than the {len(self.part_sha256)} parts hashed "
                "before its upload: its source grew"
            )
        return self.part_sha256[number - 1]

    def close(self) -> UploadResult:
        """Upload what is left and complete the object; returns what S3 stored."""
        if self._closed:
            raise PublishError(f"the upload of s3://{self.bucket}/{self.key} was already completed or aborted")
        self._closed = True
        try:
            if self.check is not None:
                self.check()
            if not self._upload_id:
                digest = self.sha256
                extra = self.extra
                if self.digest_metadata:
                    metadata = {**extra.get("Metadata", {}), self.digest_metadata: digest.hex()}
                    extra = {**extra, "Metadata": metadata}
                result = self.client.put_object(self.bucket, self.key, self._pending(), args=extra, sha256=digest)
                if self.on_bytes is not None:
                    self.on_bytes(result.size)
                return result
            if self._filled:
                self._submit(self._pending())
                self._buffer, self._filled = bytearray(), 0
            parts = [future.result() for future in self._parts]
            with translate_errors("CompleteMultipartUpload", self.bucket, self.key):
                response = self.client.raw.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    **self._request_args(),
                )
            self._upload_id = ""  # completed: nothing left to abort
            return UploadResult(
                key=self.key,
                size=self._size,
                sha256=self.sha256,
                version_id=str(response.get("VersionId") or ""),
                etag=str(response.get("ETag") or ""),
            )
        except BaseException:
            self.abort()
            raise
        finally:
            self._shutdown()

    def abort(self) -> None:
        """Abort the multipart upload, if one was started (best effort, logged on failure)."""
        self._closed = True
        if self._pool is not None:
            for future in self._parts:
                future.cancel()
            wait(self._parts, return_when=FIRST_EXCEPTION, timeout=0)
        self._shutdown()
        if not self._upload_id:
            return
        upload_id, self._upload_id = self._upload_id, ""
        self._abort_upload(upload_id)

    def abort_in_flight(self) -> str:
        """Abort from another thread while the producer may still be writing (a cancelled publish).

        Drops the queued parts and aborts the multipart upload at once, without waiting for the parts
        being sent (S3 refuses them afterwards); the producer's next step raises through ``check``, and
        its own :meth:`abort` then shuts the upload threads down without waiting for those parts. Returns
        the aborted upload's id, or ``""`` when no multipart upload was started (or it was already
        completed or aborted).
        """
        self._cancelled = True
        for future in list(self._parts):
            future.cancel()
        upload_id, self._upload_id = self._upload_id, ""
        if upload_id:
            self._abort_upload(upload_id)
        return upload_id

    def _abort_upload(self, upload_id: str) -> None:
        try:
            with translate_errors("AbortMultipartUpload", self.bucket, self.key):
                self.client.raw.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=upload_id, **self._request_args()
                )
        except S3RequestError as err:
            log.warning(
                "Could not abort the multipart upload %s of s3://%s/%s (a retry of the task cleans it up; "
                "an AbortIncompleteMultipartUpload lifecycle rule does too): %s",
                upload_id,
                self.bucket,
                self.key,
                err,
            )
        else:
            log.info("Aborted the multipart upload %s of s3://%s/%s", upload_id, self.bucket, self.key)

    def _shutdown(self) -> None:
        self._spare.clear()
        if self._pool is not None:
            # Once cancelled, the parts on the wire are refused anyway: the task must not wait for them.
            self._pool.shutdown(wait=not self._cancelled, cancel_futures=True)
            self._pool = None
