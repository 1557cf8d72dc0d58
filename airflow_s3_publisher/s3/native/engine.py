"""The native engine itself: stores built from the S3 client, worker threads, PUTs and GETs with retries."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_s3_publisher.exceptions import S3RequestError
from airflow_s3_publisher.s3.engine import MEMORY_BUDGET, EngineUnavailable, boto3_download
from airflow_s3_publisher.s3.errors import where
from airflow_s3_publisher.s3.native.body import NativeBody
from airflow_s3_publisher.s3.native.credentials import CredentialBridge
from airflow_s3_publisher.s3.native.failures import backoff_seconds, classify, request_error
from airflow_s3_publisher.s3.native.requests import put_attributes, unsupported, unsupported_key
from airflow_s3_publisher.s3.native.setup import (
    bundle_problem,
    client_options,
    concurrency_for,
    config_problem,
    environment_problem,
    forked_with_obstore,
    resolver_problem,
    store_config,
)
from airflow_s3_publisher.s3.native.workers import ByteBudget, run_each
from airflow_s3_publisher.s3.objects import GetRequest, GetResult, ObjectBody, PutJob, PutRequest, UploadResult

if TYPE_CHECKING:
    from airflow_s3_publisher.s3.client import S3Client

__all__ = ["STREAM_CHUNK", "NativeEngine"]

log = logging.getLogger(__name__)

#: Objects up to this size are downloaded into one buffer; larger ones are streamed in chunks of this size.
STREAM_CHUNK = 1 << 20


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
        bridge: CredentialBridge,
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
    def create(cls, client: S3Client, *, concurrency: int | None = None, bucket: str = "") -> NativeEngine:
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
        :param bucket: the bucket of the first transfer, if known: its store is the one built to check
            the settings, and kept (each store costs milliseconds to build, a tenth of a small fetch's set-up).
        :raises EngineUnavailable: obstore is missing or broken, the client has no boto3 session or the
            session no credentials, or a setting (from the connection, its botocore config or the
            environment) cannot be honoured; the message says which.
        """
        if forked_with_obstore():
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
        problem = resolver_problem() or environment_problem(options) or config_problem(client.botocore_config)
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
            problem = bundle_problem(verify, parts.hostname)
            if problem:
                raise EngineUnavailable(problem)
        engine = cls(
            client,
            obstore,
            S3Store,
            CredentialBridge(credentials),
            endpoint_url=endpoint,
            addressing_style=style,
            client_options=client_options(parts.scheme, verify, options),
            concurrency=concurrency or concurrency_for(options),
        )
        # Settings obstore refuses fail here, not mid-transfer.
        if bucket:
            engine._store(bucket, {})
        else:
            engine._build_store("probe-bucket", (), ("", ""))
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
        config = store_config(
            bucket,
            self._endpoint_url,
            region=self._region,
            virtual=self._addressing_style == "virtual",
            checksums=self._options.checksums,
            sse=sse,
        )
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
        """``None`` when the engine can send ``operation`` with ``args``; otherwise why it cannot."""
        return unsupported(args, operation=operation)

    @staticmethod
    def unsupported_key(key: str) -> str | None:
        """``None`` when the engine can address ``key`` exactly; otherwise why not (the boto3 path sends it)."""
        return unsupported_key(key)

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
        budget = ByteBudget(MEMORY_BUDGET)
        done: list[UploadResult] = []

        def store(job: PutJob, stop: threading.Event) -> None:
            with budget.hold(job.size):
                if stop.is_set():
                    return
                result = self._put_one(bucket, job.load(), stop)
            on_stored(result)
            done.append(result)

        run_each(jobs, store, self._concurrency, "s3-native-put")
        return done

    def _put_one(self, bucket: str, request: PutRequest, stop: threading.Event) -> UploadResult:
        problem = self.unsupported(request.args)
        if problem:  # the batch was chosen for its first object's args; this one differs
            raise _refused("PutObject", bucket, request.key, problem)
        if unsupported_key(request.key):
            self._tell_boto3(request.key)
            return self._client.put_object(bucket, request.key, request.body, args=request.args, sha256=request.sha256)
        store = self._store(bucket, request.args)
        attributes, tags = put_attributes(request.args)
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

        run_each(requests, download, self._concurrency, "s3-native-get")

    def _get_one(
        self, bucket: str, request: GetRequest, on_bytes: Callable[[int], None], stop: threading.Event
    ) -> GetResult:
        send = self._getter(bucket, request.key, request.version_id, request.args)
        if send is None:
            return boto3_download(self._client, bucket, request, on_bytes)
        counted = 0

        def count(total: int) -> None:
            nonlocal counted
            if total > counted:
                on_bytes(total - counted)
                counted = total

        def get() -> GetResult:
            answer = send()
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

    def open(self, bucket: str, key: str, version_id: str = "", args: Mapping[str, Any] | None = None) -> ObjectBody:
        """Open a streaming GET of one object (pinned to ``version_id`` when given); see :meth:`S3Client.get_object`.

        The request is retried like the others until the body starts; a failure while the body is read is not.
        """
        send = self._getter(bucket, key, version_id, args or {})
        if send is None:
            return self._client.get_object(bucket, key, version_id, args)
        answer = self._attempts("GetObject", bucket, key, send, threading.Event())

        def failed(err: BaseException) -> S3RequestError:
            if not self._is_request_error(err):
                raise err
            return request_error(classify(err, self._bridge), "GetObject", bucket, key, 1, self._endpoint_url)

        return ObjectBody(
            NativeBody(iter(answer.stream(min_chunk_size=STREAM_CHUNK)), failed), int(answer.meta["size"])
        )

    def _getter(self, bucket: str, key: str, version_id: str, args: Mapping[str, Any]) -> Callable[[], Any] | None:
        """The GetObject call for ``key`` (obstore's answer: meta and body), or None where obstore cannot
        address the key and the boto3 path must serve it; refuses ``args`` the engine cannot send."""
        problem = self.unsupported(args, operation="GetObject")
        if problem:
            raise _refused("GetObject", bucket, key, problem)
        if unsupported_key(key):
            self._tell_boto3(key)
            return None
        store = self._store(bucket, args)
        options = {"version": version_id} if version_id else None
        obstore = self._obstore
        return lambda: obstore.get(store, key, options=options)

    def _tell_boto3(self, key: str) -> None:
        if not self._told_boto3:
            self._told_boto3 = True
            log.info("Sending objects whose keys obstore cannot address (e.g. %r) through boto3", key)

    # ------------------------------------------------------------------ shared machinery

    def _attempts(self, operation: str, bucket: str, key: str, call: Callable[[], Any], stop: threading.Event) -> Any:
        """Run ``call`` up to ``max_attempts`` times, logging each failed attempt that is retried."""
        attempts = self._options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except Exception as err:
                if not self._is_request_error(err):
                    raise  # e.g. the local file could not be written: not the request's failure
                failure = classify(err, self._bridge)
                if not failure.retryable or attempt == attempts or stop.is_set():
                    raise request_error(failure, operation, bucket, key, attempt, self._endpoint_url) from err
            log.warning(
                "S3 %s attempt %d of %d failed (%s); retrying with backoff",
                operation,
                attempt,
                attempts,
                failure.reason,
            )
            time.sleep(backoff_seconds(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _is_request_error(self, err: BaseException) -> bool:
        """Whether obstore raised ``err`` for a request (its own types, or an OSError for a 404...)."""
        if isinstance(err, self._request_errors):
            return True
        return isinstance(err, OSError) and ("Debug source:" in str(err) or "Error performing" in str(err))

    def close(self) -> None:
        """Drop the stores (their connections close); the engine cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._stores.clear()

    def __enter__(self) -> NativeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refused(operation: str, bucket: str, key: str, problem: str) -> S3RequestError:
    """The error for a request the engine cannot send as asked (``problem`` says why)."""
    return S3RequestError(
        f"{operation} on {where(bucket, key)} cannot go through the native engine: {problem}",
        operation=operation,
        bucket=bucket,
        key=key,
        code="NativeEngineUnsupported",
    )
