"""The native request engine: one PutObject or GetObject per small object, through obstore (Rust).

botocore spends about 5 ms of CPU per request on this kind of machine (its serialisation, signing and
event pipeline, not the network), which caps a plain publish of many small files far below what the
store can take. This engine sends the same requests through obstore (the Rust ``object_store`` crate
and ``reqwest``), keeping a bounded number in flight from a few worker threads (obstore's synchronous
calls release the GIL). It is used only for the single-PUT objects of a plain publish and the GETs of
a prefix fetch; multipart uploads, listings and everything else stay on boto3.

What it guarantees (each checked by tests/test_native_engine.py against a real SeaweedFS):

* **Settings from the Airflow connection only.** Endpoint, region, addressing style and TLS
  verification are the ones the boto3 path resolved from the connection (passed to :meth:`create`).
  Credentials are read from the boto3 session's credential provider on every refresh
  (``get_frozen_credentials()``, cached at most :data:`CREDENTIAL_TTL` and never past the credentials'
  own expiry), so assumed roles keep working past their expiry; no key is ever copied into the store.
* **No stray ``AWS_*`` variables.** obstore's ``S3Store`` starts from every ``AWS_*`` variable it
  knows. The engine sets each setting it can explicitly (bucket, region, ``AWS_ENDPOINT_URL``,
  ``AWS_ENDPOINT_URL_S3``, addressing style, payload signing, ``AWS_SKIP_SIGNATURE``,
  ``AWS_S3_EXPRESS``, ``AWS_REQUEST_PAYER``, ``AWS_DISABLE_TAGGING``, ``AWS_CHECKSUM_ALGORITHM`` when
  checksums are on), replaces the HTTP client options as a whole (so ``AWS_ALLOW_HTTP``,
  ``AWS_ALLOW_INVALID_CERTIFICATES``, ``AWS_PROXY_URL``... are ignored), and passes a credential
  provider (so ``AWS_ACCESS_KEY_ID``, ``AWS_SESSION_TOKEN``, ``AWS_ROLE_ARN``, web identity, container
  and instance metadata settings are never consulted). Variables it cannot override
  (:data:`UNOVERRIDABLE_ENV`) make :meth:`create` refuse with :class:`EngineUnavailable`.
* **PutObject only:** one PUT per object, no HEAD, no multipart; ``x-amz-checksum-sha256`` on every
  PUT unless ``TransferOptions(checksums=False)``, and the store checks it (a mismatch: ``BadDigest``);
  the payload hash is signed only when there is no checksum (then no checksum header at all is sent),
  so the body is hashed once either way. Metadata, tags, content type, storage class, SSE/KMS and
  the expected bucket owner (a signed header) are sent; :meth:`NativeEngine.unsupported` names any
  other argument, and such a publish belongs on the boto3 path.
* **Retries in Python:** obstore's own retries are off; each failed attempt that will be retried is
  logged (``S3 PutObject attempt 1 of 5 failed (HTTP 503 SlowDown); retrying with backoff``), with
  ``max_attempts``, ``connect_timeout`` and ``read_timeout`` from :class:`TransferOptions`.
* **Errors** become :class:`S3RequestError` (operation, bucket, key, code, status, request id; the same
  hints as the boto3 path; never credentials; obstore's error kept as ``__cause__``).
* **Never breaks a publish:** obstore is imported only in :meth:`NativeEngine.create`; a missing or
  broken wheel, a store that cannot be built, or a process forked from one that had obstore loaded
  (obstore's runtime threads do not survive a fork: its calls would hang) raises
  :class:`EngineUnavailable` (see :func:`try_create`, which logs why and returns ``None``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from botocore.exceptions import ClientError

from airflow_s3_publisher.exceptions import S3PublisherError, S3RequestError
from airflow_s3_publisher.s3 import TransferOptions, UploadResult, _client_error, is_aws_endpoint

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Requests in flight at once unless :meth:`NativeEngine.create` is told otherwise: small requests are
#: latency-bound, so this is higher than TransferOptions.concurrency's default (see benchmarks/engine_probe.py).
DEFAULT_CONCURRENCY = 32
#: Bytes of request bodies held at once across the workers, for jobs that say their size (:class:`SizedJob`).
MEMORY_BUDGET = 64 * MiB
#: Objects up to this size are downloaded into one buffer; larger ones are streamed in chunks of this size.
STREAM_CHUNK = 1 * MiB
#: The longest the engine keeps one answer of the session's credential provider.
CREDENTIAL_TTL = timedelta(minutes=5)
#: obstore asks again this long before the credentials it holds expire.
CREDENTIAL_REFRESH_MARGIN = timedelta(seconds=60)
#: Backoff before attempt n+1 is uniform in [0, min(BACKOFF_MAX, BACKOFF_BASE * 2**(n-1))] (as botocore's
#: standard retry mode).
BACKOFF_BASE = 1.0
BACKOFF_MAX = 20.0
#: ``AWS_*`` variables obstore would apply and the engine cannot override with an explicit value.
UNOVERRIDABLE_ENV = (
    "AWS_SERVER_SIDE_ENCRYPTION",
    "AWS_SSE_KMS_KEY_ID",
    "AWS_SSE_BUCKET_KEY_ENABLED",
    "AWS_SSE_CUSTOMER_KEY_BASE64",
)
#: PutObject arguments (boto3's names) the engine sends; anything else needs the boto3 path.
PUT_ARGS = frozenset(
    {
        "ContentType",
        "Metadata",
        "Tagging",
        "StorageClass",
        "ServerSideEncryption",
        "SSEKMSKeyId",
        "ExpectedBucketOwner",
        "CacheControl",
        "ContentDisposition",
        "ContentEncoding",
        "ContentLanguage",
    }
)
#: GetObject arguments the engine sends.
GET_ARGS = frozenset({"ExpectedBucketOwner"})
_ATTRIBUTES = {
    "ContentType": "Content-Type",
    "StorageClass": "Storage-Class",
    "CacheControl": "Cache-Control",
    "ContentDisposition": "Content-Disposition",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
}
#: Metadata names obstore would send as one of the headers above instead of ``x-amz-meta-*``.
_RESERVED_METADATA = frozenset(
    name for attribute in _ATTRIBUTES.values() for name in (attribute.lower(), attribute.lower().replace("-", ""))
)
_SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RETRY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
    }
)
#: How obstore's HTTP error kinds read in errors and logs (botocore's names for the same failures).
_NETWORK_CODES = {
    "Connect": "EndpointConnectionError",
    "Timeout": "ReadTimeoutError",
    "Request": "ConnectionClosedError",
    "Interrupted": "ConnectionClosedError",
    "Decode": "ResponseStreamingError",
    "Unknown": "HTTPClientError",
}
_DNS_LABELS = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9](\.[a-z0-9][a-z0-9-]*[a-z0-9])*$")


#: Set in a child process forked while obstore was loaded: obstore's runtime threads do not survive a
#: fork, and its calls would hang in the child.
_forked_with_obstore = False


def _after_fork_in_child() -> None:
    global _forked_with_obstore
    _forked_with_obstore = _forked_with_obstore or "obstore" in sys.modules


os.register_at_fork(after_in_child=_after_fork_in_child)


class EngineUnavailable(S3PublisherError):
    """The native engine cannot serve this connection here (missing wheel, unsupported setting...)."""


@dataclass(frozen=True, slots=True)
class PutRequest:
    """One object to store with a single PutObject.

    :param key: the object key.
    :param body: every byte of the object.
    :param sha256: SHA-256 of ``body``, computed by the caller (it goes into the :class:`UploadResult`).
    :param args: PutObject arguments in boto3's names (see :data:`PUT_ARGS`): ``ContentType``,
        ``Metadata`` (a dict), ``Tagging`` (url-encoded), ``StorageClass``, ``ServerSideEncryption``,
        ``SSEKMSKeyId``, ``ExpectedBucketOwner``...
    """

    key: str
    body: bytes
    sha256: bytes
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class GetRequest:
    """One object to download into a file.

    :param key: the object key.
    :param path: the file to create (or overwrite); its parent directory must exist.
    :param version_id: download this version rather than the latest.
    :param args: GetObject arguments in boto3's names; only ``ExpectedBucketOwner`` is supported.
    """

    key: str
    path: Path
    version_id: str = ""
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class GetResult:
    """One downloaded object: its key, the file written, its size and the SHA-256 of the bytes written."""

    key: str
    path: Path
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class SizedJob:
    """A put job that says beforehand how many bytes its body will hold.

    :meth:`NativeEngine.put_many` runs a sized job only when its bytes fit in :data:`MEMORY_BUDGET`
    together with the bodies already in flight (one job always runs), so memory stays bounded even
    when the files are large; a plain callable is held to the number of workers only.

    :param size: bytes the body will hold (e.g. the file's size when it was listed).
    :param read: reads the file and returns its :class:`PutRequest`.
    """

    size: int
    read: Callable[[], PutRequest]

    def __call__(self) -> PutRequest:
        return self.read()


@dataclass(frozen=True, slots=True)
class _Failure:
    """What one failed attempt amounts to."""

    status: int | None
    code: str
    message: str
    request_id: str
    retryable: bool

    @property
    def reason(self) -> str:
        """How the failure reads in a retry warning, e.g. ``HTTP 503 SlowDown``."""
        return f"HTTP {self.status} {self.code}".strip() if self.status else self.code


class NativeEngine:
    """PutObject and GetObject for many small objects through obstore; see the module docstring.

    Build it with :meth:`create`; it is safe to share between threads; :meth:`close` it when done.
    """

    name = "native"

    def __init__(
        self,
        obstore: Any,
        store_class: Any,
        bridge: _CredentialBridge,
        *,
        endpoint_url: str,
        region: str,
        addressing_style: str,
        client_options: Mapping[str, Any],
        options: TransferOptions,
        concurrency: int,
    ) -> None:
        """Use :meth:`create`."""
        self._obstore = obstore
        self._store_class = store_class
        self._request_errors: tuple[type[BaseException], ...] = (obstore.exceptions.BaseError,)
        self._bridge = bridge
        self._endpoint_url = endpoint_url
        self._region = region
        self._addressing_style = addressing_style
        self._client_options = dict(client_options)
        self._options = options
        self._concurrency = concurrency
        self._stores: dict[tuple[str, tuple[tuple[str, str], ...], tuple[str, str]], Any] = {}
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        session: boto3.Session,
        *,
        endpoint_url: str,
        region: str,
        addressing_style: str,
        verify: bool | str | None,
        options: TransferOptions,
        client_config: Config | None = None,
        concurrency: int | None = None,
    ) -> NativeEngine:
        """Build the engine for one Airflow connection, as the boto3 path resolved it.

        :param session: the S3Hook's boto3 session; its credential provider is asked for credentials on
            every refresh (never copied).
        :param endpoint_url: the endpoint (``http(s)://host[:port]``); empty for AWS's own
            ``https://s3.<region>.amazonaws.com``.
        :param region: the signing region (``us-east-1`` when empty; ``auto`` for R2).
        :param addressing_style: ``path``, ``virtual`` (``<bucket>.<host>``) or ``auto`` (virtual for AWS's
            own endpoints, path elsewhere). Buckets whose names cannot be host names go path-style, as
            with botocore.
        :param verify: TLS verification as boto3 takes it: ``False`` (none), a CA bundle file, or
            ``None``/``True`` (the system's roots; ``None`` also honours the session's ``ca_bundle``
            setting, e.g. ``AWS_CA_BUNDLE``, as botocore does). The bundle adds to the system's roots.
        :param options: attempts, timeouts and checksums (``part_size`` and ``multipart_threshold`` are
            the caller's business: every object here is one request).
        :param client_config: the botocore Config of the boto3 path, when it has one; settings the
            engine cannot honour (proxies, client certificates, accelerate/dual-stack/FIPS endpoints)
            make it refuse.
        :param concurrency: requests in flight at once; default ``max(options.concurrency,``
            :data:`DEFAULT_CONCURRENCY` ``)``.
        :raises EngineUnavailable: obstore is missing or broken, the session has no credentials, or a
            setting (from the connection or the environment) cannot be honoured; the message says which.
        """
        if _forked_with_obstore:
            raise EngineUnavailable(
                "this process was forked from one that had loaded obstore, whose runtime threads do not survive "
                "a fork (its requests would hang)"
            )
        try:
            import obstore
            import obstore.exceptions
            from obstore.store import S3Store
        except Exception as err:  # a missing or broken wheel: ImportError, OSError from the .so, ...
            raise EngineUnavailable(f"obstore cannot be imported ({type(err).__name__}: {err})") from err
        problem = _environment_problem(options) or _config_problem(client_config)
        if problem:
            raise EngineUnavailable(problem)
        style = addressing_style or "auto"
        if style not in ("path", "virtual", "auto"):
            raise EngineUnavailable(f"addressing style {addressing_style!r} is not one of 'path', 'virtual', 'auto'")
        if style == "auto":
            style = "virtual" if is_aws_endpoint(endpoint_url) else "path"
        credentials = session.get_credentials()
        if credentials is None:
            raise EngineUnavailable("the connection's boto3 session has no credentials")
        endpoint = endpoint_url.rstrip("/") or f"https://s3.{region or 'us-east-1'}.amazonaws.com"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineUnavailable(f"endpoint {endpoint_url!r} is not an http(s) URL")
        if verify is None:
            verify = session._session.get_config_variable("ca_bundle")
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency {concurrency} must be at least 1")
        if isinstance(verify, str) and verify and parts.scheme == "https":
            problem = _bundle_problem(verify, parts.hostname)
            if problem:
                raise EngineUnavailable(problem)
        client_options = _client_options(parts.scheme, verify, options)
        engine = cls(
            obstore,
            S3Store,
            _CredentialBridge(credentials),
            endpoint_url=endpoint,
            region=region or "us-east-1",
            addressing_style=style,
            client_options=client_options,
            options=options,
            concurrency=concurrency or max(options.concurrency, DEFAULT_CONCURRENCY),
        )
        engine._build_store("probe-bucket", (), ("", ""))  # settings obstore refuses fail here, not mid-publish
        return engine

    def _store(self, bucket: str, args: Mapping[str, Any]) -> Any:
        """The obstore S3Store for ``bucket`` and the store-wide settings in ``args`` (built once)."""
        owner = str(args.get("ExpectedBucketOwner") or "")
        headers = (("x-amz-expected-bucket-owner", owner),) if owner else ()
        sse = (str(args.get("ServerSideEncryption") or ""), str(args.get("SSEKMSKeyId") or ""))
        cache_key = (bucket, headers, sse)
        store = self._stores.get(cache_key)
        if store is not None and not self._closed:
            return store
        with self._lock:
            if self._closed:
                raise RuntimeError("the native engine is closed")
            store = self._stores.get(cache_key)
            if store is not None:
                return store
            store = self._build_store(bucket, headers, sse)
            self._stores[cache_key] = store
            return store

    def _build_store(self, bucket: str, headers: tuple[tuple[str, str], ...], sse: tuple[str, str]) -> Any:
        virtual = self._addressing_style == "virtual" and _host_compatible(bucket, self._endpoint_url)
        endpoint = self._endpoint_url
        if virtual:
            parts = urlsplit(endpoint)
            endpoint = urlunsplit((parts.scheme, f"{bucket}.{parts.netloc}", parts.path, "", ""))
        # Every setting obstore would otherwise take from an AWS_* variable, set explicitly.
        config: dict[str, Any] = {
            "region": self._region,
            "endpoint": endpoint,
            "aws_endpoint_url_s3": endpoint,
            "virtual_hosted_style_request": virtual,
            # With the checksum on, it is the integrity check (obstore hashes the body once for it, and
            # the store refuses a mismatch with BadDigest); without it, the signed payload hash is.
            "unsigned_payload": self._options.checksums,
            "skip_signature": False,
            "s3_express": False,
            "request_payer": False,
            "disable_tagging": False,
        }
        if self._options.checksums:
            config["checksum_algorithm"] = "SHA256"
        if sse[0]:
            config["server_side_encryption"] = sse[0]
            if sse[1]:
                config["sse_kms_key_id"] = sse[1]
        client_options = dict(self._client_options)
        if headers:
            client_options["default_headers"] = dict(headers)
        try:
            return self._store_class(
                bucket,
                config=config,
                client_options=client_options,
                retry_config={"max_retries": 0},
                credential_provider=self._bridge,
            )
        except Exception as err:
            raise EngineUnavailable(f"obstore could not build a store for bucket {bucket!r}: {err}") from err

    # ------------------------------------------------------------------ what it can send

    def unsupported(self, args: Mapping[str, Any], *, operation: str = "PutObject") -> str | None:
        """``None`` when the engine can send ``operation`` with ``args``; otherwise why it cannot.

        :param args: request arguments in boto3's names, as a PutRequest or GetRequest carries them.
        :param operation: ``PutObject`` (see :data:`PUT_ARGS`) or ``GetObject`` (``ExpectedBucketOwner``).
        """
        known = PUT_ARGS if operation == "PutObject" else GET_ARGS
        unknown = sorted(set(args) - known)
        if unknown:
            return f"the native engine cannot send {', '.join(unknown)}"
        sse = args.get("ServerSideEncryption")
        if sse and sse not in _SSE_MODES:
            return f"the native engine cannot send ServerSideEncryption={sse!r} (only {', '.join(_SSE_MODES)})"
        if args.get("SSEKMSKeyId") and not str(sse or "").startswith("aws:kms"):
            return "SSEKMSKeyId without ServerSideEncryption='aws:kms'"
        for name in args.get("Metadata") or {}:
            if name.lower() in _RESERVED_METADATA:
                return f"the native engine would send metadata {name!r} as a header of that name"
        tagging = args.get("Tagging")
        if tagging and not isinstance(tagging, str):
            return f"Tagging must be url-encoded text, got {type(tagging).__name__}"
        return None

    @staticmethod
    def unsupported_key(key: str) -> str | None:
        """``None`` when the engine can address ``key`` exactly; otherwise why not.

        obstore's paths cannot start or end with ``/``, hold an empty segment (``a//b``), a ``.`` or
        ``..`` segment, or a control character; such keys need the boto3 path.
        """
        if not key or key.startswith("/") or key.endswith("/"):
            return f"key {key!r} starts or ends with '/'"
        for segment in key.split("/"):
            if segment in ("", ".", ".."):
                return f"key {key!r} has an empty, '.' or '..' segment"
        if any(ord(c) < 32 or ord(c) == 127 for c in key):
            return f"key {key!r} holds a control character"
        return None

    # ------------------------------------------------------------------ uploads

    def put_many(
        self,
        bucket: str,
        jobs: Iterable[Callable[[], PutRequest]],
        on_stored: Callable[[UploadResult], None],
    ) -> list[UploadResult]:
        """Run each job (it reads one file and returns its PutRequest) and store its object with one PUT.

        Jobs are taken from ``jobs`` one at a time (it may be a generator: nothing is listed ahead) by
        the worker threads, so at most ``concurrency`` bodies exist at once (and, for
        :class:`SizedJob` jobs, at most :data:`MEMORY_BUDGET` bytes of them beyond the first).

        :param bucket: the bucket every object goes to.
        :param jobs: callables returning a :class:`PutRequest`; an exception one raises (e.g. a file
            that changed) stops the publish and is raised as is.
        :param on_stored: called with each :class:`UploadResult` as soon as its object is stored, from
            the worker threads.
        :returns: the results, in completion order.
        :raises S3RequestError: the first request that failed (after its retries); the others still in
            flight finish, no new one starts.
        """
        iterator = iter(jobs)
        take = threading.Lock()
        done: list[UploadResult] = []
        budget = _ByteBudget(MEMORY_BUDGET)
        stop = threading.Event()
        failures: list[BaseException] = []

        def work() -> None:
            while not stop.is_set():
                try:
                    with take:
                        job = next(iterator, None)
                    if job is None:
                        return
                    size = getattr(job, "size", None)
                    with budget.hold(size if isinstance(size, int) else 0):
                        if stop.is_set():
                            return
                        request = job()
                        result = self._put_one(bucket, request, stop)
                    on_stored(result)
                    done.append(result)
                except BaseException as err:
                    failures.append(err)
                    stop.set()
                    return

        self._run_workers(work, stop, "s3-native-put", _known_length(jobs))
        if failures:
            raise failures[0]
        return done

    def _put_one(self, bucket: str, request: PutRequest, stop: threading.Event) -> UploadResult:
        problem = self.unsupported(request.args) or self.unsupported_key(request.key)
        if problem:
            raise S3RequestError(
                f"PutObject on s3://{bucket}/{request.key} cannot go through the native engine: {problem}",
                operation="PutObject",
                bucket=bucket,
                key=request.key,
                code="NativeEngineUnsupported",
            )
        store = self._store(bucket, request.args)
        attributes, tags = _put_attributes(request.args)
        obstore = self._obstore

        def put() -> Any:
            return obstore.put(store, request.key, request.body, attributes=attributes, tags=tags, use_multipart=False)

        answer = self._attempts("PutObject", bucket, request.key, put, stop)
        return UploadResult(
            key=request.key,
            size=len(request.body),
            sha256=request.sha256,
            version_id=str(answer.get("version") or ""),
            etag=str(answer.get("e_tag") or ""),
        )

    # ------------------------------------------------------------------ downloads

    def get_many(self, bucket: str, requests: Iterable[GetRequest], on_bytes: Callable[[int], None]) -> list[GetResult]:
        """Download each object into its file, hashing the bytes as they are written.

        :param bucket: the bucket every object comes from.
        :param requests: what to download and where; a file already there is overwritten.
        :param on_bytes: called with each number of bytes written (from the worker threads); bytes
            written again by a retried attempt are not counted twice.
        :returns: the results, in completion order.
        :raises S3RequestError: the first download that failed after its retries (a missing key:
            code ``NoSuchKey``, status 404); the others still in flight finish, no new one starts.
        """
        iterator = iter(requests)
        take = threading.Lock()
        done: list[GetResult] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def work() -> None:
            while not stop.is_set():
                try:
                    with take:
                        request = next(iterator, None)
                    if request is None:
                        return
                    done.append(self._get_one(bucket, request, on_bytes, stop))
                except BaseException as err:
                    failures.append(err)
                    stop.set()
                    return

        self._run_workers(work, stop, "s3-native-get", _known_length(requests))
        if failures:
            raise failures[0]
        return done

    def _get_one(
        self, bucket: str, request: GetRequest, on_bytes: Callable[[int], None], stop: threading.Event
    ) -> GetResult:
        problem = self.unsupported(request.args, operation="GetObject") or self.unsupported_key(request.key)
        if problem:
            raise S3RequestError(
                f"GetObject on s3://{bucket}/{request.key} cannot go through the native engine: {problem}",
                operation="GetObject",
                bucket=bucket,
                key=request.key,
                code="NativeEngineUnsupported",
            )
        store = self._store(bucket, request.args)
        options = {"version": request.version_id} if request.version_id else None
        obstore = self._obstore
        counted = 0

        def count(total: int) -> None:
            nonlocal counted
            if total > counted:
                on_bytes(total - counted)
                counted = total

        def get() -> GetResult:
            answer = obstore.get(store, request.key, options=options)
            digest = hashlib.sha256()
            written = 0
            with open(request.path, "wb") as out:
                if int(answer.meta["size"]) <= STREAM_CHUNK:
                    chunks: Iterable[Any] = (answer.bytes(),)
                else:
                    chunks = answer.stream(min_chunk_size=STREAM_CHUNK)
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    count(written)
            return GetResult(request.key, request.path, written, digest.digest())

        result: GetResult = self._attempts("GetObject", bucket, request.key, get, stop)
        return result

    # ------------------------------------------------------------------ shared machinery

    def _run_workers(self, work: Callable[[], None], stop: threading.Event, name: str, jobs: int | None) -> None:
        """Run ``work`` in ``concurrency`` threads (fewer for fewer jobs) until each returns."""
        count = self._concurrency if jobs is None else max(1, min(self._concurrency, jobs))
        threads = [threading.Thread(target=work, name=f"{name}-{n}", daemon=True) for n in range(count)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # e.g. Airflow's task timeout in the main thread: start nothing new
            stop.set()
            raise

    def _attempts(self, operation: str, bucket: str, key: str, call: Callable[[], Any], stop: threading.Event) -> Any:
        """Run ``call`` up to ``max_attempts`` times, logging each failed attempt that is retried."""
        attempts = self._options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except Exception as err:
                if not self._is_request_error(err):
                    raise  # e.g. the local file could not be written: not the request's failure
                failure = _classify(err, self._bridge)
                if not failure.retryable or attempt == attempts or stop.is_set():
                    raise self._error(failure, operation, bucket, key, attempt) from err
            log.warning(
                "S3 %s attempt %d of %d failed (%s); retrying with backoff",
                operation,
                attempt,
                attempts,
                failure.reason,
            )
            time.sleep(random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))))
        raise AssertionError("unreachable")  # pragma: no cover

    def _is_request_error(self, err: BaseException) -> bool:
        """Whether obstore raised ``err`` for a request (its own types, or an OSError for a 404...)."""
        if isinstance(err, self._request_errors):
            return True
        return isinstance(err, OSError) and ("Debug source:" in str(err) or "Error performing" in str(err))

    def _error(self, failure: _Failure, operation: str, bucket: str, key: str, attempts: int) -> S3RequestError:
        """The S3RequestError the boto3 path would raise for the same answer (same codes and hints)."""
        if failure.status is not None:
            response: dict[str, Any] = {
                "Error": {"Code": failure.code or str(failure.status), "Message": failure.message},
                "ResponseMetadata": {"HTTPStatusCode": failure.status, "RequestId": failure.request_id},
            }
            return _client_error(ClientError(response, operation), operation, bucket, key)  # type: ignore[arg-type]
        where = f"s3://{bucket}/{key}"
        if failure.code == "CredentialsError":
            message = (
                f"{operation} on {where} failed: the connection's credentials could not be had ({failure.message})"
            )
        else:
            tries = f"after {attempts} attempts" if attempts > 1 else "on its only attempt"
            message = f"{operation} on {where} failed {tries}: {failure.code} (endpoint {self._endpoint_url})"
        return S3RequestError(message, operation=operation, bucket=bucket, key=key, code=failure.code)

    def close(self) -> None:
        """Drop the stores (their connections close); the engine cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._stores.clear()

    def __enter__(self) -> NativeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def try_create(session: boto3.Session, **kwargs: Any) -> NativeEngine | None:
    """:meth:`NativeEngine.create`, or ``None`` with an INFO line saying why the boto3 path is used."""
    try:
        return NativeEngine.create(session, **kwargs)
    except EngineUnavailable as err:
        log.info("Native S3 engine unavailable, using boto3: %s", err)
        return None


# ---------------------------------------------------------------------------------------------- helpers


def _known_length(items: Iterable[Any]) -> int | None:
    """How many items a list or other sized collection holds; None for a generator."""
    return len(items) if isinstance(items, Sized) else None


class _CredentialBridge:
    """obstore's ``credential_provider``: the boto3 session's credentials, asked afresh on every refresh.

    obstore keeps an answer until ``refresh_threshold`` before its ``expires_at``, which is the
    credentials' own expiry (botocore refreshable credentials) or :data:`CREDENTIAL_TTL` from now,
    whichever comes first; each refresh calls ``get_frozen_credentials()``, which lets botocore
    refresh assumed-role credentials on its own schedule. The last error is kept for error messages.
    """

    refresh_threshold = CREDENTIAL_REFRESH_MARGIN

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials
        self.error: BaseException | None = None

    def __call__(self) -> dict[str, Any]:
        try:
            frozen = self._credentials.get_frozen_credentials()
        except Exception as err:
            self.error = err
            raise
        if not frozen.access_key or not frozen.secret_key:
            self.error = RuntimeError("the session's credentials have no access key or secret key")
            raise self.error
        self.error = None
        expires = datetime.now(UTC) + CREDENTIAL_TTL
        own = getattr(self._credentials, "_expiry_time", None)  # botocore RefreshableCredentials
        if isinstance(own, datetime) and own.tzinfo is not None:
            expires = min(expires, own.astimezone(UTC))  # obstore takes only datetime.UTC (not dateutil's)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token or None,
            "expires_at": expires,
        }

    def __repr__(self) -> str:  # obstore may show its provider in errors: never the keys
        return "<credentials of the connection's boto3 session>"


class _ByteBudget:
    """Bounds the bytes of bodies held at once (one body always fits)."""

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


def _environment_problem(options: TransferOptions) -> str | None:
    """Why the environment holds an AWS_* setting obstore would apply and the engine cannot undo."""
    found = [name for name in UNOVERRIDABLE_ENV if os.environ.get(name)]
    if not options.checksums and os.environ.get("AWS_CHECKSUM_ALGORITHM"):
        found.append("AWS_CHECKSUM_ALGORITHM")
    if found:
        return f"{', '.join(found)} set in the environment would apply to every native request"
    return None


def _config_problem(config: Config | None) -> str | None:
    """Why a botocore Config asks for something the engine cannot do."""
    if config is None:
        return None
    if getattr(config, "proxies", None):
        return "the connection's config sets proxies"
    if getattr(config, "client_cert", None):
        return "the connection's config sets a client certificate"
    if getattr(config, "use_fips_endpoint", None):
        return "the connection's config asks for FIPS endpoints"
    if getattr(config, "use_dualstack_endpoint", None):
        return "the connection's config asks for dual-stack endpoints"
    s3 = getattr(config, "s3", None) or {}
    for name in ("use_accelerate_endpoint", "use_dualstack_endpoint", "use_arn_region"):
        if s3.get(name):
            return f"the connection's config sets s3.{name}"
    return None


def _client_options(scheme: str, verify: bool | str | None, options: TransferOptions) -> dict[str, Any]:
    """obstore's HTTP client options: passed whole, so none comes from the environment."""
    client: dict[str, Any] = {
        "allow_http": scheme == "http",
        "allow_invalid_certificates": verify is False,
        "connect_timeout": timedelta(seconds=options.connect_timeout),
        # Per read, like botocore's read_timeout; the whole request has no limit of its own (big GETs).
        "read_timeout": timedelta(seconds=options.read_timeout),
        "timeout": timedelta(days=1),
        "http1_only": True,
    }
    if isinstance(verify, str) and verify:
        try:
            client["root_certificate"] = Path(verify).read_bytes()
        except OSError as err:
            raise EngineUnavailable(f"cannot read the CA bundle {verify!r}: {err}") from err
    return client


def _bundle_problem(bundle: str, host: str) -> str | None:
    """Why the native TLS stack would refuse ``host`` although boto3 (OpenSSL) accepts it.

    rustls refuses a server certificate that is itself a CA (``CaUsedAsEndEntity``): what
    ``openssl req -x509`` and MinIO's certgen make by default, and then put in the CA bundle as is.
    """
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(Path(bundle).read_bytes())
    except (OSError, ValueError) as err:
        return f"cannot read the CA bundle {bundle!r}: {err}"
    for certificate in certificates:
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            continue
        if not is_ca or certificate.issuer != certificate.subject:
            continue
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            patterns = [str(n) for n in names.get_values_for_type(x509.DNSName)]
            patterns += [str(n) for n in names.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            patterns = [str(a.value) for a in certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        if any(_host_matches(pattern, host) for pattern in patterns):
            return (
                f"the CA bundle's certificate for {host} is a self-signed CA certificate used as the server's own, "
                "which the native TLS stack (rustls) refuses"
            )
    return None


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host.count(".") == pattern.count(".")
    return pattern == host


def _host_compatible(bucket: str, endpoint: str) -> bool:
    """Whether ``bucket`` can be a host name label set (``<bucket>.<host>``), as botocore decides."""
    if not 3 <= len(bucket) <= 63 or not _DNS_LABELS.match(bucket) or re.fullmatch(r"[\d.]+", bucket):
        return False
    return "." not in bucket or not endpoint.startswith("https:")  # dotted names break TLS host checks


def _put_attributes(args: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str] | None]:
    """obstore attributes (headers and ``x-amz-meta-*``) and tags for PutObject ``args``."""
    attributes = {header: str(args[name]) for name, header in _ATTRIBUTES.items() if args.get(name)}
    for name, value in (args.get("Metadata") or {}).items():
        attributes[str(name)] = str(value)
    tagging = args.get("Tagging")
    tags = dict(parse_qsl(tagging, keep_blank_values=True)) if tagging else None
    return attributes, tags


_STATUS = re.compile(r"non-2xx status code: (\d{3})|\bstatus: (\d{3})")
_KIND = re.compile(r"\bkind: (Connect|Request|Timeout|Interrupted|Decode|Unknown)\b")


def _xml(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>([^<]*)</{tag}>", text)
    return unescape(match.group(1)) if match else ""


def _classify(err: BaseException, bridge: _CredentialBridge) -> _Failure:
    """Read an obstore error: HTTP status and S3 error (code, message, request id), or a network failure."""
    text = str(err)
    shown = text.split("\n\nDebug source:", 1)[0]
    if "External AWS credential provider" in text:
        cause = bridge.error
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else "the provider failed"
        return _Failure(None, "CredentialsError", detail, "", retryable=False)
    status_match = _STATUS.search(shown) or _STATUS.search(text)
    if status_match:
        status = int(status_match.group(1) or status_match.group(2))
        code = _xml(shown, "Code") or _xml(text.replace('\\"', '"'), "Code")
        message = _xml(shown, "Message")
        request_id = _xml(shown, "RequestId")
        retryable = status in _RETRY_STATUSES or code in _RETRY_CODES
        return _Failure(status, code, message, request_id, retryable)
    kind = _KIND.search(text)
    if kind:  # the first "kind:" is obstore's HttpError kind when there is one
        return _Failure(None, _NETWORK_CODES[kind.group(1)], "", "", retryable=True)
    if "HTTP error" in text or "error sending request" in text:
        return _Failure(None, "ConnectionClosedError", "", "", retryable=True)
    return _Failure(None, type(err).__name__, shown[:200], "", retryable=False)
