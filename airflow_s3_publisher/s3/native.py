"""The native request engine: one PutObject or GetObject per small object, through obstore (Rust).

botocore spends about 5 ms of CPU per request on this kind of machine (its serialisation, signing and
event pipeline, not the network), which caps a plain publish of many small files far below what the
store can take. This engine sends the same requests through obstore (the Rust ``object_store`` crate
and ``reqwest``), keeping a bounded number in flight from a few worker threads (obstore's synchronous
calls release the GIL). It is used only for the single-PUT objects of a plain publish and the GETs of
a prefix fetch; multipart uploads, listings and everything else stay on boto3.

What it guarantees (each checked by tests/test_native_engine.py against a real SeaweedFS):

* **Settings from the Airflow connection only.** Endpoint, region, addressing style and TLS
  verification are the ones :func:`~airflow_s3_publisher.s3.client.connect` resolved from the
  connection (the :class:`S3Client` given to :meth:`NativeEngine.create`).
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
  other argument, and such a transfer belongs on the boto3 path. The rare key obstore cannot address
  (``a//b``, a trailing ``/``: :meth:`NativeEngine.unsupported_key`) goes through the client's boto3
  path, said once in the log.
* **Retries in Python:** obstore's own retries are off; each failed attempt that will be retried is
  logged (``S3 PutObject attempt 1 of 5 failed (HTTP 503 SlowDown); retrying with backoff``), with
  ``max_attempts``, ``connect_timeout`` and ``read_timeout`` from :class:`TransferOptions`.
* **Errors** become :class:`S3RequestError` (operation, bucket, key, code, status, request id; the same
  hints as the boto3 path; never credentials; obstore's error kept as ``__cause__``).
* **Never breaks a publish:** obstore is imported only in :meth:`NativeEngine.create`; a missing or
  broken wheel, a store that cannot be built, TLS the native stack would refuse (a self-signed CA
  certificate serving as the server's own), or a process forked from one that had obstore loaded
  (obstore's runtime threads do not survive a fork: its calls would hang) raises
  :class:`~airflow_s3_publisher.s3.engine.EngineUnavailable`, and
  :func:`~airflow_s3_publisher.s3.engine.select_engine` falls back to boto3, saying why.

Name resolution and proxies: reqwest resolves host names with the system resolver, not Python's
``socket.getaddrinfo`` (so the engine steps aside where that is replaced: gevent, eventlet, tests that
fake names), and honours ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` as botocore does.

"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from airflow_s3_publisher.exceptions import S3RequestError
from airflow_s3_publisher.s3.engine import MEMORY_BUDGET, EngineUnavailable
from airflow_s3_publisher.s3.errors import explain, where
from airflow_s3_publisher.s3.objects import GetRequest, GetResult, PutJob, PutRequest, UploadResult

if TYPE_CHECKING:
    from botocore.config import Config

    from airflow_s3_publisher.options import TransferOptions
    from airflow_s3_publisher.s3.client import S3Client

__all__ = ["DEFAULT_CONCURRENCY", "GET_ARGS", "PUT_ARGS", "NativeEngine"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Requests in flight at once unless :meth:`NativeEngine.create` is told otherwise: small requests are
#: latency-bound, so this is higher than TransferOptions.concurrency's default (see benchmarks/engine_probe.py).
DEFAULT_CONCURRENCY = 32
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
        client: S3Client,
        obstore: Any,
        store_class: Any,
        bridge: _CredentialBridge,
        *,
        endpoint_url: str,
        addressing_style: str,
        client_options: Mapping[str, Any],
        concurrency: int,
    ) -> None:
        """Use :meth:`create`."""
        self._client = client
        self._obstore = obstore
        self._store_class = store_class
        self._request_errors: tuple[type[BaseException], ...] = (obstore.exceptions.BaseError,)
        self._bridge = bridge
        self._endpoint_url = endpoint_url
        self._region = client.region or "us-east-1"
        self._addressing_style = addressing_style
        self._client_options = dict(client_options)
        self._options = client.options
        self._concurrency = concurrency
        self._stores: dict[tuple[str, tuple[tuple[str, str], ...], tuple[str, str]], Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._told_boto3 = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, client: S3Client, *, concurrency: int | None = None) -> NativeEngine:
        """Build the engine for ``client``: its endpoint, region, addressing style, TLS verification,
        transfer options and the boto3 session its credentials come from, as :func:`connect` resolved them.

        The session's credential provider is asked for credentials on every refresh (never copied).
        TLS: ``client.verify`` ``False`` (none), a CA bundle file, or ``None``/``True`` (the system's
        roots; ``None`` also honours the session's ``ca_bundle`` setting, e.g. ``AWS_CA_BUNDLE``, as
        botocore does). A bundle adds to the system's roots.

        :param client: the S3Client of the transfer (its boto3 client also serves the rare key the
            engine cannot address, see :meth:`unsupported_key`).
        :param concurrency: requests in flight at once; by default ``client.options.concurrency``, but at
            least :data:`DEFAULT_CONCURRENCY` unless it was set below its default (small requests are
            latency-bound: 32 in flight keep the store busy where boto3's 8 do not).
        :raises EngineUnavailable: obstore is missing or broken, the client has no boto3 session or the
            session no credentials, or a setting (from the connection, its botocore config or the
            environment) cannot be honoured; the message says which.
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
        options = client.options
        problem = (
            _resolver_problem()
            or _environment_problem(options)
            or _config_problem(getattr(client.raw.meta, "config", None))
        )
        if problem:
            raise EngineUnavailable(problem)
        style = client.addressing_style or "path"
        if style not in ("path", "virtual"):
            raise EngineUnavailable(f"addressing style {style!r} is not 'path' or 'virtual'")
        session = client.session
        if session is None:
            raise EngineUnavailable("the S3 client has no boto3 session to take credentials from")
        credentials = session.get_credentials()
        if credentials is None:
            raise EngineUnavailable("the connection's boto3 session has no credentials")
        endpoint = client.endpoint.rstrip("/") or f"https://s3.{client.region or 'us-east-1'}.amazonaws.com"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise EngineUnavailable(f"endpoint {client.endpoint!r} is not a plain http(s) URL")
        verify = client.verify
        if verify is None:
            verify = session._session.get_config_variable("ca_bundle")
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency {concurrency} must be at least 1")
        if isinstance(verify, str) and verify and parts.scheme == "https":
            problem = _bundle_problem(verify, parts.hostname)
            if problem:
                raise EngineUnavailable(problem)
        engine = cls(
            client,
            obstore,
            S3Store,
            _CredentialBridge(credentials),
            endpoint_url=endpoint,
            addressing_style=style,
            client_options=_client_options(parts.scheme, verify, options),
            concurrency=concurrency or _concurrency(options),
        )
        engine._build_store("probe-bucket", (), ("", ""))  # settings obstore refuses fail here, not mid-transfer
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
        self, bucket: str, jobs: Iterable[PutJob], on_stored: Callable[[UploadResult], None]
    ) -> list[UploadResult]:
        """Load each job (it reads one file) and store its object with one PutObject.

        Jobs are taken from ``jobs`` one at a time by the worker threads (it may be a generator:
        nothing is listed ahead), each loaded only when its size fits in :data:`MEMORY_BUDGET` with the
        bodies already in flight (one always fits), so memory stays bounded for any number of files.

        :param bucket: the bucket every object goes to.
        :param jobs: the objects; an exception a job's ``load`` raises (e.g. a file that changed)
            stops the transfer and is raised as is.
        :param on_stored: called with each :class:`UploadResult` as soon as its object is stored, from
            the worker threads; an exception it raises stops the transfer too.
        :returns: the results, in completion order.
        :raises S3RequestError: the first request that failed (after its retries); the others still in
            flight finish, no new one starts.
        """
        budget = _ByteBudget(MEMORY_BUDGET)
        done: list[UploadResult] = []

        def store(job: PutJob, stop: threading.Event) -> None:
            with budget.hold(job.size):
                if stop.is_set():
                    return
                result = self._put_one(bucket, job.load(), stop)
            on_stored(result)
            done.append(result)

        self._run_each(jobs, store, "s3-native-put")
        return done

    def _put_one(self, bucket: str, request: PutRequest, stop: threading.Event) -> UploadResult:
        problem = self.unsupported(request.args)
        if problem:  # the batch was chosen for its first object's args; this one differs
            raise S3RequestError(
                f"PutObject on {where(bucket, request.key)} cannot go through the native engine: {problem}",
                operation="PutObject",
                bucket=bucket,
                key=request.key,
                code="NativeEngineUnsupported",
            )
        if self.unsupported_key(request.key):
            self._tell_boto3(request.key)
            return self._client.put_object(bucket, request.key, request.body, args=request.args, sha256=request.sha256)
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

    def get_many(
        self,
        bucket: str,
        requests: Iterable[GetRequest],
        on_bytes: Callable[[int], None],
        on_done: Callable[[GetResult], None],
    ) -> None:
        """Download each object into its file, hashing the bytes as they are written.

        :param bucket: the bucket every object comes from.
        :param requests: what to download and where (a file already there is overwritten).
        :param on_bytes: called with each number of bytes written, from the worker threads; bytes
            written again by a retried attempt are not counted twice.
        :param on_done: called with each :class:`GetResult` once its file is complete, from the worker
            threads (e.g. to check it against the manifest); an exception it raises stops the transfer.
        :raises S3RequestError: the first download that failed after its retries (a missing key:
            code ``NoSuchKey``, status 404); the others still in flight finish, no new one starts.
        """

        def download(request: GetRequest, stop: threading.Event) -> None:
            on_done(self._get_one(bucket, request, on_bytes, stop))

        self._run_each(requests, download, "s3-native-get")

    def _get_one(
        self, bucket: str, request: GetRequest, on_bytes: Callable[[int], None], stop: threading.Event
    ) -> GetResult:
        problem = self.unsupported(request.args, operation="GetObject")
        if problem:
            raise S3RequestError(
                f"GetObject on {where(bucket, request.key)} cannot go through the native engine: {problem}",
                operation="GetObject",
                bucket=bucket,
                key=request.key,
                code="NativeEngineUnsupported",
            )
        if self.unsupported_key(request.key):
            self._tell_boto3(request.key)
            return self._boto3_get(bucket, request, on_bytes)
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
            return GetResult(request, written, digest.digest())

        result: GetResult = self._attempts("GetObject", bucket, request.key, get, stop)
        return result

    def _boto3_get(self, bucket: str, request: GetRequest, on_bytes: Callable[[int], None]) -> GetResult:
        """One download through the client's boto3 path (for a key obstore cannot address)."""
        body = self._client.get_object(bucket, request.key, request.version_id, request.args).stream
        digest = hashlib.sha256()
        size = 0
        try:
            with open(request.path, "wb") as out:
                while chunk := body.read(STREAM_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    on_bytes(len(chunk))
        finally:
            body.close()
        return GetResult(request, size, digest.digest())

    def _tell_boto3(self, key: str) -> None:
        if not self._told_boto3:
            self._told_boto3 = True
            log.info("Sending objects whose keys obstore cannot address (e.g. %r) through boto3", key)

    # ------------------------------------------------------------------ shared machinery

    def _run_each(self, items: Iterable[Any], work: Callable[[Any, threading.Event], None], name: str) -> None:
        """Run ``work(item, stop)`` for every item in ``concurrency`` threads (fewer for fewer items).

        Each thread takes the next item when it is free; on the first failure ``stop`` is set, no item
        is taken any more, and once the running ones are done the failure is raised.
        """
        iterator = iter(items)
        take = threading.Lock()
        stop = threading.Event()
        failures: list[BaseException] = []

        def worker() -> None:
            while not stop.is_set():
                try:
                    with take:
                        item = next(iterator, _END)
                    if item is _END:
                        return
                    work(item, stop)
                except BaseException as err:
                    failures.append(err)
                    stop.set()
                    return

        known = _known_length(items)
        count = self._concurrency if known is None else max(1, min(self._concurrency, known))
        threads = [threading.Thread(target=worker, name=f"{name}-{n}", daemon=True) for n in range(count)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # e.g. Airflow's task timeout in the main thread: start nothing new
            stop.set()
            raise
        if failures:
            raise failures[0]

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
            return explain(
                operation,
                bucket,
                key,
                code=failure.code or str(failure.status),
                status=failure.status,
                request_id=failure.request_id,
                said=failure.message,
            )
        if failure.code == "CredentialsError":
            place = where(bucket, key)
            message = (
                f"{operation} on {place} failed: the connection's credentials could not be had ({failure.message})"
            )
        else:
            tries = f"after {attempts} attempts" if attempts > 1 else "on its only attempt"
            message = (
                f"{operation} on {where(bucket, key)} failed {tries}: {failure.code} (endpoint {self._endpoint_url})"
            )
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


_END = object()


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


def _concurrency(options: TransferOptions) -> int:
    """Requests in flight: TransferOptions.concurrency's default (8, tuned for boto3) is raised to
    :data:`DEFAULT_CONCURRENCY`; a lower setting (e.g. 1: one object at a time) is kept as asked."""
    from airflow_s3_publisher.options import TransferOptions

    if options.concurrency < TransferOptions().concurrency:
        return options.concurrency
    return max(options.concurrency, DEFAULT_CONCURRENCY)


def _resolver_problem() -> str | None:
    """Why Python's name resolution is not the system's here (obstore resolves names without Python).

    A replaced ``socket.getaddrinfo`` (gevent or eventlet monkey-patching, a test's fake names) would
    send the native engine elsewhere than boto3 for the same endpoint.
    """
    module = getattr(socket.getaddrinfo, "__module__", "")
    if module != "socket":
        return f"Python's name resolution is replaced (socket.getaddrinfo comes from {module or 'elsewhere'})"
    return None


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
