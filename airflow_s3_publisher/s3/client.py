"""The S3 seam: one client, built from an Airflow AWS connection, that every transfer goes through.

``publish()``, ``fetch()``, the operators and the CLI never touch botocore: they ask an
:class:`S3Client` to put, get, list, presign or start a multipart upload. Many small objects go
through :meth:`S3Client.engine`, which picks the request engine (the native one, or a boto3 thread
pool) per :attr:`TransferOptions.engine`. Publishing needs only ``s3:PutObject``.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.exceptions import BotoCoreError

from airflow_s3_publisher.exceptions import S3RequestError
from airflow_s3_publisher.hashing import b64
from airflow_s3_publisher.options import TransferOptions
from airflow_s3_publisher.s3.errors import translate_errors
from airflow_s3_publisher.s3.multipart import MultipartWriter
from airflow_s3_publisher.s3.objects import ObjectBody, UploadResult
from airflow_s3_publisher.spec import is_aws_endpoint

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_s3 import S3Client as BotoS3Client

    from airflow_s3_publisher.progress import LogLike
    from airflow_s3_publisher.s3.engine import Engine

__all__ = ["S3Client", "connect"]

log = logging.getLogger(__name__)


class S3Client:
    """A ready S3 client with the endpoint and region it really uses.

    Build one with :func:`connect` (from an Airflow AWS connection) and pass it to ``publish()`` or
    ``fetch()`` to reuse it, or to point them at a client built some other way.

    :param raw: the boto3 S3 client, or a function that makes it when it is first needed (botocore
        spends about 0.1 s loading S3's service model, which a transfer on the native engine never needs).
    :param endpoint: the endpoint URL requests go to.
    :param region: the region requests are signed for.
    :param options: the transfer options the client was built with (retries, timeouts, checksums).
    :param session: the boto3 session the credentials come from (the native engine refreshes through it).
    :param addressing_style: ``path`` or ``virtual``.
    :param verify: TLS verification: ``None``/``True`` (on), ``False`` (off) or a CA bundle path.
    :param config: the botocore configuration the client has (or will have); by default the client's own.
    """

    def __init__(
        self,
        raw: BotoS3Client | Callable[[], BotoS3Client],
        endpoint: str,
        region: str,
        options: TransferOptions | None = None,
        session: boto3.Session | None = None,
        addressing_style: str = "path",
        verify: bool | str | None = None,
        config: Config | None = None,
    ) -> None:
        self._raw = _RawClient(raw)
        self.endpoint = endpoint
        self.region = region
        self.options = options if options is not None else TransferOptions()
        self.session = session
        self.addressing_style = addressing_style
        self.verify = verify
        self._config = config
        self._engines: dict[str, Engine] = {}

    def __repr__(self) -> str:
        return (
            f"S3Client(endpoint={self.endpoint!r}, region={self.region!r}, addressing_style={self.addressing_style!r}, "
            f"options={self.options!r})"
        )

    @property
    def raw(self) -> BotoS3Client:
        """The boto3 S3 client (made now if it was not yet)."""
        return self._raw.get()

    @property
    def botocore_config(self) -> Config | None:
        """The botocore configuration of :attr:`raw`, read without making the client."""
        if self._config is not None:
            return self._config
        return cast("Config | None", getattr(self.raw.meta, "config", None))

    def with_options(self, options: TransferOptions | None) -> S3Client:
        """This client with other transfer options (``None``: unchanged); retries and timeouts stay as built.

        The copy shares the boto3 client (made once, by whichever uses it first), not the engines.
        """
        if options is None or options == self.options:
            return self
        other = copy.copy(self)
        other.options = options
        other._engines = {}
        return other

    # ------------------------------------------------------------------ single objects
    def put_object(
        self, bucket: str, key: str, body: bytes, *, args: Mapping[str, Any] | None = None, sha256: bytes
    ) -> UploadResult:
        """One PutObject of ``body`` (whose SHA-256 is ``sha256``); S3 checks it when checksums are on."""
        request: dict[str, Any] = dict(args or {})
        if self.options.checksums:
            request["ChecksumSHA256"] = b64(sha256)
        with translate_errors("PutObject", bucket, key):
            response = self.raw.put_object(Bucket=bucket, Key=key, Body=body, **request)
        return UploadResult(
            key=key,
            size=len(body),
            sha256=sha256,
            version_id=str(response.get("VersionId") or ""),
            etag=str(response.get("ETag") or ""),
        )

    def get_object(
        self, bucket: str, key: str, version_id: str = "", args: Mapping[str, Any] | None = None
    ) -> ObjectBody:
        """Open a streaming GET of one object (pinned to ``version_id`` when given)."""
        request: dict[str, Any] = dict(args or {})
        if version_id:
            request["VersionId"] = version_id
        with translate_errors("GetObject", bucket, key):
            response = self.raw.get_object(Bucket=bucket, Key=key, **request)
        size = response.get("ContentLength")
        return ObjectBody(_TranslatedBody(response["Body"], bucket, key), size if isinstance(size, int) else None)

    def object_size(self, bucket: str, key: str, version_id: str = "", args: Mapping[str, Any] | None = None) -> int:
        """The stored size of one object (a HEAD request; pinned to ``version_id`` when given)."""
        request: dict[str, Any] = dict(args or {})
        if version_id:
            request["VersionId"] = version_id
        with translate_errors("HeadObject", bucket, key):
            return int(self.raw.head_object(Bucket=bucket, Key=key, **request)["ContentLength"])

    def list_objects(
        self, bucket: str, prefix: str, args: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[str, int]]:
        """Every (key, size) below ``prefix``, a page at a time."""
        paginator = self.raw.get_paginator("list_objects_v2")
        with translate_errors("ListObjectsV2", bucket, prefix):
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **dict(args or {})):
                for item in page.get("Contents", []):
                    yield item["Key"], int(item.get("Size", 0))

    def presign_get(self, bucket: str, key: str, *, version_id: str = "", expires: int) -> str:
        """A pre-signed GET URL (SigV4) for one object, pinned to ``version_id`` when given."""
        # botocore presigns with SigV2 in older AWS regions unless a signature version is configured;
        # keep the client's own (SigV4): it is what every region, R2 and MinIO accept.
        # (botocore-stubs type handlers as returning None; choose-signer handlers return the version.)
        choose_signer = cast("Callable[..., None]", _presign_with_sigv4)
        self.raw.meta.events.register_first("choose-signer.s3.GetObject", choose_signer, unique_id="s3pub-sigv4")
        params: dict[str, str] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        with translate_errors("GetObject", bucket, key):
            return self.raw.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)

    # ------------------------------------------------------------------ multipart
    def multipart(
        self,
        bucket: str,
        key: str,
        args: Mapping[str, Any],
        *,
        on_bytes: Callable[[int], None] | None = None,
        digest_metadata: str = "",
        part_sha256: Sequence[bytes] = (),
        object_sha256: bytes = b"",
    ) -> MultipartWriter:
        """A write-only stream storing what is written as one object (see :class:`MultipartWriter`)."""
        return MultipartWriter(
            self,
            bucket,
            key,
            self.options,
            extra=dict(args),
            on_bytes=on_bytes,
            digest_metadata=digest_metadata,
            part_sha256=part_sha256,
            object_sha256=object_sha256,
        )

    def abort_stale_uploads(self, bucket: str, key: str, args: Mapping[str, Any], before: datetime) -> int:
        """Abort incomplete multipart uploads of exactly ``key`` started before ``before`` (best effort).

        An earlier try whose store went away could not abort its upload; its retry cleans up here. Needs
        ``s3:ListBucketMultipartUploads`` and ``s3:AbortMultipartUpload``; without them nothing is done.
        """
        try:
            with translate_errors("ListMultipartUploads", bucket, key):
                response = self.raw.list_multipart_uploads(Bucket=bucket, Prefix=key, **dict(args))
        except S3RequestError as err:
            log.info("Could not look for incomplete uploads of s3://%s/%s left by an earlier try: %s", bucket, key, err)
            return 0
        aborted = 0
        for upload in response.get("Uploads", []):
            if upload.get("Key") != key or upload.get("Initiated", before) >= before:
                continue
            upload_id = upload["UploadId"]
            try:
                with translate_errors("AbortMultipartUpload", bucket, key):
                    self.raw.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, **dict(args))
            except S3RequestError as err:
                log.warning("Could not abort the incomplete upload %s of s3://%s/%s: %s", upload_id, bucket, key, err)
                continue
            aborted += 1
            log.warning(
                "Aborted the incomplete multipart upload %s of s3://%s/%s left by an earlier try (started %s)",
                upload_id,
                bucket,
                key,
                upload.get("Initiated"),
            )
        return aborted

    # ------------------------------------------------------------------ many small objects
    def engine(self, args: Mapping[str, Any], logger: LogLike | None = None, bucket: str = "") -> Engine:
        """The request engine for many small PUTs or GETs that carry ``args``.

        ``auto`` takes the native engine when it is installed and can send ``args``, else boto3 (and
        says why in the log); ``native`` raises :class:`InvalidSpecError` when it cannot serve.
        ``bucket``, when given, is the bucket the requests go to (the native engine prepares it).
        """
        from airflow_s3_publisher.s3.engine import select_engine

        return select_engine(self, args, logger or log, bucket)

    def cached_engine(self, name: str, build: Callable[[], Engine]) -> Engine:
        """The engine called ``name`` for this client, built once."""
        if name not in self._engines:
            self._engines[name] = build()
        return self._engines[name]

    def close(self) -> None:
        """Release the engines' resources (the boto3 client needs no closing)."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()


class _TranslatedBody:
    """A GET's streaming body whose read errors (a connection cut mid-body) are :class:`S3RequestError` s."""

    def __init__(self, raw: Any, bucket: str, key: str) -> None:
        self._raw = raw
        self._bucket = bucket
        self._key = key

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left when negative)."""
        with translate_errors("GetObject", self._bucket, self._key):
            data: bytes = self._raw.read(n) if n is not None and n >= 0 else self._raw.read()
        return data

    def close(self) -> None:
        """Release the connection."""
        self._raw.close()


class _RawClient:
    """The boto3 client, or the function that makes it on first use (once, whichever thread asks first)."""

    def __init__(self, raw: BotoS3Client | Callable[[], BotoS3Client]) -> None:
        self._lock = threading.Lock()
        self._client: BotoS3Client | None = None
        self._make: Callable[[], BotoS3Client] | None = None
        if hasattr(raw, "meta"):  # a client (boto3's clients are not callable)
            self._client = cast("BotoS3Client", raw)
        else:
            self._make = raw

    def get(self) -> BotoS3Client:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                assert self._make is not None
                self._client = self._make()
            return self._client


def connect(
    aws_conn_id: str | None,
    *,
    endpoint: str = "",
    region: str = "",
    options: TransferOptions | None = None,
) -> S3Client:
    """Build an :class:`S3Client` whose credentials come from the Airflow connection ``aws_conn_id``.

    Where the connection has none (or does not exist, or ``aws_conn_id`` is None), boto3's default
    chain applies: environment variables, ``~/.aws/credentials``, instance roles. ``endpoint`` and
    ``region`` override the connection's; a custom endpoint uses path-style addressing, AWS's own
    virtual-hosted addressing (unless the connection's ``config_kwargs`` choose an ``addressing_style``).
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
    style = configured_s3.get("addressing_style")
    if endpoint_url and not style:
        # Unless the connection's config_kwargs chose a style: path-style for a custom endpoint; for AWS's
        # own (e.g. a PublishedResult's Endpoint) virtual-hosted, as botocore does when given no endpoint
        # (given one, it would go path-style; it still does for bucket names that cannot be hosts).
        style = "virtual" if is_aws_endpoint(endpoint_url) else "path"
        ours["s3"] = {**configured_s3, "addressing_style": style}
    if opts.checksums and "payload_signing_enabled" not in configured_s3:
        # Over plain HTTP botocore would hash every body again for the signature; the signed SHA-256
        # checksum header already binds the body (as botocore decides by itself over HTTPS).
        ours["s3"] = {**configured_s3, **ours.get("s3", {}), "payload_signing_enabled": False}
    if not opts.checksums:
        ours["request_checksum_calculation"] = "when_required"
        ours["response_checksum_validation"] = "when_required"
    config = base.merge(Config(**ours))

    def make_client() -> BotoS3Client:
        try:
            raw: BotoS3Client = session.client(
                "s3", endpoint_url=endpoint_url or None, config=config, verify=hook.verify
            )
        except BotoCoreError as err:
            raise _client_error(aws_conn_id, err) from err
        _log_retries(raw, opts.max_attempts)
        return raw

    try:
        session = hook.get_session(region_name=region or hook.region_name)
    except BotoCoreError as err:
        raise _client_error(aws_conn_id, err) from err
    known_region = session.region_name or ""
    if endpoint_url and known_region:
        # Everything the native engine needs is known: the boto3 client is made only if a request needs it.
        raw: BotoS3Client | Callable[[], BotoS3Client] = make_client
        endpoint, resolved_region = endpoint_url, known_region
    else:  # botocore resolves AWS's endpoint (or the region) for the client
        raw = made = make_client()
        endpoint, resolved_region = endpoint_url or made.meta.endpoint_url, made.meta.region_name or ""
    return S3Client(
        raw,
        endpoint=endpoint,
        region=resolved_region,
        options=opts,
        session=session,
        addressing_style=style or "virtual",
        verify=hook.verify,
        config=config,
    )


def _client_error(aws_conn_id: str | None, err: BotoCoreError) -> S3RequestError:
    return S3RequestError(
        f"could not create an S3 client for connection {aws_conn_id!r}: {type(err).__name__}",
        operation="connect",
        bucket="",
    )


def _log_retries(client: BotoS3Client, max_attempts: int) -> None:
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


def _presign_with_sigv4(signature_version: str, **_kwargs: Any) -> str | None:
    """botocore's choose-signer hook: sign the URL with S3's SigV4 where botocore would pick SigV2."""
    if signature_version in ("v4-query", "s3v4-query"):
        return "s3v4-query"
    return None  # v4a, S3 Express or a version configured on the connection: botocore decides
