"""The S3 boundary: clients built from the Airflow AWS connection, uploads, downloads, error translation.

Publishing uses only ``s3:PutObject`` (PutObject, CreateMultipartUpload, UploadPart,
CompleteMultipartUpload); a failed multipart upload is aborted on a best-effort basis.
Every botocore error is translated here into :class:`S3RequestError` with the original as its cause.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from airflow_s3_publisher.exceptions import S3RequestError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: S3 refuses more parts than this in one multipart upload.
MAX_PARTS = 10_000

_HINTS = {
    "AccessDenied": "the credentials lack {permission} on arn:aws:s3:::{resource}",
    "AllAccessDisabled": "the credentials lack {permission} on arn:aws:s3:::{resource}",
    "NoSuchBucket": "bucket {bucket!r} does not exist (publishing never creates buckets)",
    "NoSuchKey": "there is no object s3://{bucket}/{key}",
    "NoSuchVersion": "the version asked for does not exist (any more) for s3://{bucket}/{key}",
    "InvalidAccessKeyId": "the access key id is not known to this S3 endpoint; check the Airflow AWS "
    "connection or the AWS_* environment variables",
    "SignatureDoesNotMatch": "the secret key does not match the access key; check the Airflow AWS "
    "connection or the AWS_* environment variables",
    "BadDigest": "the bytes S3 received do not match the SHA-256 that was sent; nothing was stored",
    "XAmzContentChecksumMismatch": "the bytes S3 received do not match the checksum that was sent",
    "InvalidRequest": "the store refused the request as sent; if it rejects checksum headers, publish and "
    "fetch with transfer=TransferOptions(checksums=False) (the CLI: --no-checksums)",
    "PermanentRedirect": "the bucket lives in another region; set region to the bucket's region",
    "AuthorizationHeaderMalformed": "the region used to sign does not match the bucket's region",
}
_NO_CHECKSUMS = "transfer=TransferOptions(checksums=False) (the CLI: --no-checksums)"
_CHECKSUM_HEADER = re.compile(r"(?i)x-amz-(checksum|sdk-checksum|trailer)")
_PERMISSION = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How bytes move: part size, parallelism, retries, timeouts and checksums.

    :param part_size: multipart part size in bytes; an archive up to this size goes in one PUT.
    :param multipart_threshold: files of a plain publish up to this size go in one PUT each (many in
        parallel); larger ones go as multipart uploads.
    :param concurrency: requests in flight at once (files or parts); the parts of one multipart upload
        held in memory are capped near 64 MiB (at least one part).
    :param max_attempts: attempts per request, first included (botocore retry policy).
    :param retry_mode: botocore retry mode: ``standard`` or ``adaptive``.
    :param connect_timeout: seconds to wait for a connection before retrying.
    :param read_timeout: seconds to wait for a response before retrying.
    :param checksums: send the SHA-256 of every object or part so S3 verifies what it receives; turn
        off only for stores that reject checksum headers.
    :param spool_archives: compress an archive into a temporary file (in ``TMPDIR``) before uploading
        it, so that even an archive larger than ``part_size`` carries its SHA-256 in its metadata.
        Costs disk space for the archive and time: compression and upload no longer overlap.
    """

    part_size: int = 8 * MiB
    multipart_threshold: int = 16 * MiB
    concurrency: int = 8
    max_attempts: int = 5
    retry_mode: str = "standard"
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    checksums: bool = True
    spool_archives: bool = False

    @property
    def parts_in_memory(self) -> int:
        """Parts of one multipart upload held at once: ``concurrency``, capped near 64 MiB in all."""
        return max(1, min(self.concurrency, (64 * MiB) // self.part_size))

    def __post_init__(self) -> None:
        if self.part_size < 5 * MiB:
            raise ValueError(f"part_size {self.part_size} is below S3's minimum of 5 MiB (5242880 bytes)")
        if self.multipart_threshold < 1:
            raise ValueError(f"multipart_threshold {self.multipart_threshold} must be at least 1 byte")
        if self.concurrency < 1:
            raise ValueError(f"concurrency {self.concurrency} must be at least 1")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts {self.max_attempts} must be at least 1")
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise ValueError(f"retry_mode {self.retry_mode!r} must be 'standard', 'adaptive' or 'legacy'")


@dataclass(frozen=True, slots=True)
class Connection:
    """A ready S3 client with the endpoint and region it really uses."""

    client: S3Client
    endpoint: str
    region: str


def is_aws_endpoint(endpoint: str) -> bool:
    """Whether ``endpoint`` is AWS's own S3 (where virtual-hosted addressing is the norm)."""
    host = urlsplit(endpoint).hostname or ""
    return not endpoint or host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def connect(
    aws_conn_id: str | None,
    *,
    endpoint: str = "",
    region: str = "",
    options: TransferOptions | None = None,
) -> Connection:
    """Build an S3 client whose credentials come from the Airflow connection ``aws_conn_id``.

    Where the connection has none (or does not exist), boto3's default chain applies: environment
    variables, ``~/.aws/credentials``, instance roles. ``endpoint`` and ``region`` override the
    connection's; a custom endpoint uses path-style addressing, AWS's own virtual-hosted addressing
    (unless the connection's ``config_kwargs`` choose an ``addressing_style``).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    opts = options or TransferOptions()
    hook = S3Hook(aws_conn_id=aws_conn_id, region_name=region or None)
    endpoint_url = endpoint or hook.conn_config.get_service_endpoint_url("s3") or ""
    ours: dict[str, Any] = {
        "retries": {"mode": opts.retry_mode, "max_attempts": opts.max_attempts},
        "connect_timeout": opts.connect_timeout,
        "read_timeout": opts.read_timeout,
        "max_pool_connections": max(10, opts.concurrency * 2),
    }
    base = hook.config if hook.config is not None else Config()
    configured_s3 = dict(getattr(base, "s3", None) or {})
    if endpoint_url and "addressing_style" not in configured_s3:
        # Unless the connection's config_kwargs chose a style: path-style for a custom endpoint; for AWS's
        # own (e.g. a PublishedResult's Endpoint) virtual-hosted, as botocore does when given no endpoint
        # (given one, it would go path-style; it still does for bucket names that cannot be hosts).
        ours["s3"] = {**configured_s3, "addressing_style": "virtual" if is_aws_endpoint(endpoint_url) else "path"}
    if not opts.checksums:
        ours["request_checksum_calculation"] = "when_required"
        ours["response_checksum_validation"] = "when_required"
    config = base.merge(Config(**ours))
    try:
        session = hook.get_session(region_name=region or hook.region_name)
        client: S3Client = session.client("s3", endpoint_url=endpoint_url or None, config=config, verify=hook.verify)
    except BotoCoreError as err:
        raise S3RequestError(
            f"could not create an S3 client for connection {aws_conn_id!r}: {type(err).__name__}",
            operation="connect",
            bucket="",
        ) from err
    _log_retries(client, opts.max_attempts)
    return Connection(
        client=client,
        endpoint=endpoint_url or client.meta.endpoint_url,
        region=client.meta.region_name or "",
    )


def _log_retries(client: S3Client, max_attempts: int) -> None:
    """Log every failed attempt that botocore is about to retry (retries are otherwise silent)."""

    def on_response(
        attempts: int, response: Any, caught_exception: BaseException | None, operation: Any, **_: Any
    ) -> None:
        status = response[0].status_code if response is not None else 0
        if caught_exception is not None:
            reason = type(caught_exception).__name__
        elif status >= 500 or status == 429:
            code = (response[1] or {}).get("Error", {}).get("Code", "")
            reason = f"HTTP {status} {code}".strip()
        else:
            return
        if attempts < max_attempts:
            log.warning(
                "S3 %s attempt %d of %d failed (%s); retrying with backoff",
                operation.name,
                attempts,
                max_attempts,
                reason,
            )

    client.meta.events.register("needs-retry.s3", on_response)


@contextmanager
def translate_errors(operation: str, bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn botocore errors raised inside the block into :class:`S3RequestError` (cause kept)."""
    try:
        yield
    except ClientError as err:
        raise _client_error(err, operation, bucket, key) from err
    except NoCredentialsError as err:
        raise S3RequestError(
            f"{operation} on {_where(bucket, key)} failed: no AWS credentials were found in the Airflow "
            "connection, the environment, ~/.aws/credentials or an instance role",
            operation=operation,
            bucket=bucket,
            key=key,
            code="NoCredentials",
        ) from err
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as err:
        raise S3RequestError(
            f"{operation} on {_where(bucket, key)} failed after retries: {type(err).__name__} ({_endpoint_of(err)})",
            operation=operation,
            bucket=bucket,
            key=key,
            code=type(err).__name__,
        ) from err
    except BotoCoreError as err:
        raise S3RequestError(
            f"{operation} on {_where(bucket, key)} failed: {type(err).__name__}: {err}",
            operation=operation,
            bucket=bucket,
            key=key,
            code=type(err).__name__,
        ) from err


def _where(bucket: str, key: str | None) -> str:
    return f"s3://{bucket}/{key}" if key is not None else f"bucket {bucket!r}"


def _endpoint_of(err: BotoCoreError) -> str:
    url = getattr(err, "kwargs", {}).get("endpoint_url", "")
    return f"endpoint {url}" if url else "no answer from the endpoint"


def _client_error(err: ClientError, operation: str, bucket: str, key: str | None) -> S3RequestError:
    error = err.response.get("Error", {})
    meta = err.response.get("ResponseMetadata", {})
    code = str(error.get("Code", "") or "Unknown")
    status = meta.get("HTTPStatusCode")
    request_id = str(meta.get("RequestId", "") or "")
    permission = _PERMISSION.get(operation, f"s3:{operation}")
    resource = bucket if operation == "ListObjectsV2" else f"{bucket}/{key if key is not None else '*'}"
    said = str(error.get("Message", "") or "")
    hint = _HINTS.get(code, said)
    hint = hint.format(permission=permission, resource=resource, bucket=bucket, key=key)
    # A bare 403 (HEAD responses have no body) is a refused permission; a 403 the store explains
    # (e.g. a path-style request to a virtual-host-only store) keeps the store's own words.
    if code in ("403", "Forbidden") or (status == 403 and code not in _HINTS and not said):
        hint = f"access denied: the credentials lack {permission} on arn:aws:s3:::{resource}"
    if code != "InvalidRequest" and _CHECKSUM_HEADER.search(said):
        hint += "; the store refuses checksum headers: publish and fetch with " + _NO_CHECKSUMS
    if code in ("404", "NotFound") and not hint:
        hint = f"not found: s3://{bucket}/{key}"
    message = f"{operation} on {_where(bucket, key)} failed: {code}"
    if status:
        message += f" (HTTP {status})"
    if hint:
        message += f": {hint}"
    if request_id:
        message += f" [request id {request_id}]"
    return S3RequestError(
        message, operation=operation, bucket=bucket, key=key, code=code, status=status, request_id=request_id
    )


def b64(digest: bytes) -> str:
    """Base64 text of a digest, as S3 writes checksums."""
    return base64.b64encode(digest).decode("ascii")


@dataclass(slots=True)
class UploadResult:
    """What S3 answered for one stored object."""

    key: str
    size: int
    sha256: bytes
    version_id: str = ""
    etag: str = ""


def put_object(
    conn: Connection,
    bucket: str,
    key: str,
    body: bytes,
    *,
    options: TransferOptions,
    extra: dict[str, Any] | None = None,
    sha256: bytes | None = None,
) -> UploadResult:
    """One PutObject of ``body``; S3 checks the SHA-256 sent with it when checksums are on.

    ``sha256`` is the digest of ``body`` when the caller already computed it.
    """
    digest = sha256 if sha256 is not None else hashlib.sha256(body).digest()
    args: dict[str, Any] = dict(extra or {})
    if options.checksums:
        args["ChecksumSHA256"] = b64(digest)
    with translate_errors("PutObject", bucket, key):
        response = conn.client.put_object(Bucket=bucket, Key=key, Body=body, **args)
    return UploadResult(
        key=key,
        size=len(body),
        sha256=digest,
        version_id=str(response.get("VersionId") or ""),
        etag=str(response.get("ETag") or ""),
    )


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
    """

    conn: Connection
    bucket: str
    key: str
    options: TransferOptions
    extra: dict[str, Any] = field(default_factory=dict)
    on_bytes: Callable[[int], None] | None = None
    digest_metadata: str = ""
    check: Callable[[], None] | None = None
    _buffer: bytearray = field(default_factory=bytearray, init=False)
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
            raise ValueError("write to a closed MultipartWriter")
        self._hash.update(data)
        self._size += len(data)
        part_size = self.options.part_size
        view = memoryview(data)
        if self._buffer:
            # Top up the pending part first.
            take = min(part_size - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == part_size:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
        while len(view) >= part_size:  # whole parts straight from the caller's bytes: one copy
            self._submit(bytes(view[:part_size]))
            view = view[part_size:]
        self._buffer += view
        return len(data)

    @property
    def sha256(self) -> bytes:
        """SHA-256 of every byte written so far (the whole object once closed)."""
        return bytes(self._hash.digest())

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def _submit(self, chunk: bytes) -> None:
        if self.check is not None:
            self.check()
        if not self._upload_id:
            args: dict[str, Any] = dict(self.extra)
            if self.options.checksums:
                args["ChecksumAlgorithm"] = "SHA256"
            with translate_errors("CreateMultipartUpload", self.bucket, self.key):
                response = self.conn.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, **args)
            self._upload_id = response["UploadId"]
            self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="s3-part")
            self._slots = threading.BoundedSemaphore(self.options.parts_in_memory)
        if len(self._parts) >= MAX_PARTS:
            raise S3RequestError(
                f"s3://{self.bucket}/{self.key} needs more than {MAX_PARTS} parts; raise part_size",
                operation="UploadPart",
                bucket=self.bucket,
                key=self.key,
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
        future.add_done_callback(lambda _f: self._slots.release() if self._slots else None)
        self._parts.append(future)

    def _raise_failed_part(self) -> None:
        for future in self._parts:
            if future.done() and future.exception() is not None:
                future.result()

    def _request_args(self) -> dict[str, Any]:
        return {k: v for k, v in self.extra.items() if k == "ExpectedBucketOwner"}

    def _upload_part(self, number: int, chunk: bytes) -> dict[str, Any]:
        args = self._request_args()
        if self.options.checksums:
            args["ChecksumSHA256"] = b64(hashlib.sha256(chunk).digest())
        with translate_errors("UploadPart", self.bucket, self.key):
            response = self.conn.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=chunk,
                **args,
            )
        if self.on_bytes is not None:
            self.on_bytes(len(chunk))
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if self.options.checksums:
            part["ChecksumSHA256"] = args["ChecksumSHA256"]
        return part

    def close(self) -> UploadResult:
        """Upload what is left and complete the object; returns what S3 stored."""
        if self._closed:
            raise ValueError("MultipartWriter closed twice")
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
                result = put_object(
                    self.conn,
                    self.bucket,
                    self.key,
                    bytes(self._buffer),
                    options=self.options,
                    extra=extra,
                    sha256=digest,
                )
                if self.on_bytes is not None:
                    self.on_bytes(result.size)
                return result
            if self._buffer:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            parts = [future.result() for future in self._parts]
            with translate_errors("CompleteMultipartUpload", self.bucket, self.key):
                response = self.conn.client.complete_multipart_upload(
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
        its own :meth:`abort` then shuts the upload threads down without waiting for those parts (each
        thread ends with its request). Returns the aborted upload's id, or ``""`` when no multipart upload
        was started (or it was already completed or aborted).
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
                self.conn.client.abort_multipart_upload(
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
        if self._pool is not None:
            # Once cancelled, the parts on the wire are refused anyway: the task must not wait for them.
            self._pool.shutdown(wait=not self._cancelled, cancel_futures=True)
            self._pool = None


def abort_stale_uploads(conn: Connection, bucket: str, key: str, request_args: dict[str, Any], before: Any) -> int:
    """Abort incomplete multipart uploads of exactly ``key`` started before ``before`` (best effort).

    An earlier try whose store went away could not abort its upload; its retry cleans up here. Needs
    ``s3:ListBucketMultipartUploads`` and ``s3:AbortMultipartUpload``; without them nothing is done.
    """
    try:
        with translate_errors("ListMultipartUploads", bucket, key):
            response = conn.client.list_multipart_uploads(Bucket=bucket, Prefix=key, **request_args)
    except S3RequestError as err:
        log.info("Could not look for incomplete uploads of s3://%s/%s left by an earlier try: %s", bucket, key, err)
        return 0
    aborted = 0
    for upload in response.get("Uploads", []):
        if upload.get("Key") != key or upload.get("Initiated", before) >= before:
            continue
        try:
            with translate_errors("AbortMultipartUpload", bucket, key):
                conn.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], **request_args)
        except S3RequestError as err:
            log.warning(
                "Could not abort the incomplete upload %s of s3://%s/%s: %s", upload["UploadId"], bucket, key, err
            )
            continue
        aborted += 1
        log.warning(
            "Aborted the incomplete multipart upload %s of s3://%s/%s left by an earlier try (started %s)",
            upload["UploadId"],
            bucket,
            key,
            upload.get("Initiated"),
        )
    return aborted


class HashingWriter:
    """Writes to a stream while hashing every byte written (and counting them)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        """Write all of ``data``."""
        self._raw.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    @property
    def sha256(self) -> bytes:
        """SHA-256 of everything written so far."""
        return bytes(self._hash.digest())


class HashingReader:
    """Reads from a stream while hashing every byte read (and counting them)."""

    def __init__(self, raw: Any, on_bytes: Callable[[int], None] | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all when negative)."""
        data: bytes = self._raw.read(n) if n is not None and n >= 0 else self._raw.read()
        self._hash.update(data)
        self.size += len(data)
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data

    def drain(self, chunk: int = MiB) -> None:
        """Read (and hash) everything that is left."""
        while self.read(chunk):
            pass

    @property
    def sha256(self) -> bytes:
        """SHA-256 of everything read so far."""
        return bytes(self._hash.digest())


class ObjectBody(NamedTuple):
    """An open GET: the streaming body and the object's size in bytes (None if not sent)."""

    stream: Any
    size: int | None


def get_object(
    conn: Connection, bucket: str, key: str, version_id: str = "", extra: dict[str, Any] | None = None
) -> ObjectBody:
    """Open a streaming GET of one object (pinned to ``version_id`` when given)."""
    args: dict[str, Any] = dict(extra or {})
    if version_id:
        args["VersionId"] = version_id
    with translate_errors("GetObject", bucket, key):
        response = conn.client.get_object(Bucket=bucket, Key=key, **args)
    size = response.get("ContentLength")
    return ObjectBody(response["Body"], size if isinstance(size, int) else None)


def list_keys(conn: Connection, bucket: str, prefix: str, extra: dict[str, Any] | None = None) -> list[tuple[str, int]]:
    """Every (key, size) below ``prefix``."""
    found: list[tuple[str, int]] = []
    paginator = conn.client.get_paginator("list_objects_v2")
    with translate_errors("ListObjectsV2", bucket, prefix):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **(extra or {})):
            for item in page.get("Contents", []):
                found.append((item["Key"], int(item.get("Size", 0))))
    return found
