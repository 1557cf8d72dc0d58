"""Request engines for many small objects: the boto3 thread pool, the native engine, and the choice between them.

An engine stores :class:`PutJob` s with one PutObject each and downloads :class:`GetRequest` s into
files, keeping a bounded number of requests (and bytes) in flight however many objects there are.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.s3.objects import GetRequest, GetResult, ObjectBody, PutJob, UploadResult

if TYPE_CHECKING:
    from airflow_s3_publisher.progress import LogLike
    from airflow_s3_publisher.s3.client import S3Client

__all__ = ["MEMORY_BUDGET", "BotoEngine", "Engine", "EngineUnavailable", "boto3_download", "select_engine"]

#: Bytes of small objects held in memory at once across the requests in flight (one object always fits).
MEMORY_BUDGET = 64 * 1024 * 1024
_CHUNK = 1 << 20

T = TypeVar("T")
R = TypeVar("R")


class EngineUnavailable(Exception):  # noqa: N818 - an outcome of probing, never raised to users
    """The native engine cannot be used here (not installed, or broken); the message says why."""


class Engine(Protocol):
    """Stores and downloads many small objects."""

    name: str

    def unsupported(self, args: Mapping[str, Any]) -> str | None:
        """None if the engine can send requests carrying ``args``, else why not."""

    def put_many(
        self, bucket: str, jobs: Iterable[PutJob], on_stored: Callable[[UploadResult], None]
    ) -> list[UploadResult]:
        """Load and store every job with one PutObject each; on the first failure stop the rest and raise it."""

    def get_many(
        self,
        bucket: str,
        requests: Iterable[GetRequest],
        on_bytes: Callable[[int], None],
        on_done: Callable[[GetResult], None],
    ) -> None:
        """Download every object into its file, hashing as it writes, and pass each result to ``on_done``.

        On the first failure (a request, or ``on_done`` raising) stop the rest and raise it.
        """

    def open(self, bucket: str, key: str, version_id: str = "", args: Mapping[str, Any] | None = None) -> ObjectBody:
        """Open a streaming GET of one object, pinned to ``version_id`` when given."""

    def close(self) -> None:
        """Release what the engine holds (connections, threads)."""


def boto3_download(client: S3Client, bucket: str, request: GetRequest, on_bytes: Callable[[int], None]) -> GetResult:
    """Download one object into ``request.path`` through the client's boto3 path, hashing it as it comes."""
    body = client.get_object(bucket, request.key, request.version_id, request.args).stream
    digest = hashlib.sha256()
    size = 0
    try:
        with open(request.path, "wb") as out:
            while chunk := body.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                on_bytes(len(chunk))
    finally:
        body.close()
    return GetResult(request, size, digest.digest())


def select_engine(client: S3Client, args: Mapping[str, Any], logger: LogLike, bucket: str = "") -> Engine:
    """The engine ``client.options.engine`` asks for, able to send ``args``; see :attr:`TransferOptions.engine`.

    ``bucket``, when given, is where the requests go: a native engine built now prepares its store.
    """
    wanted = client.options.engine
    if wanted != "boto3":
        try:
            native = client.cached_engine("native", lambda: _build_native(client, bucket))
        except EngineUnavailable as err:
            reason = str(err)
        else:
            reason = native.unsupported(args) or ""
            if not reason:
                return native
        if wanted == "native":
            raise InvalidSpecError(
                f"engine='native' cannot serve this transfer: {reason}; use engine='auto' or 'boto3'"
            )
        logger.info("Using the boto3 engine for these objects: %s", reason)
    return client.cached_engine("boto3", lambda: BotoEngine(client))


def _build_native(client: S3Client, bucket: str) -> Engine:
    try:
        native = importlib.import_module("airflow_s3_publisher.s3.native")
    except ImportError as err:
        raise EngineUnavailable(f"the native engine is not installed ({err})") from err
    engine: Engine = native.NativeEngine.create(client, bucket=bucket)
    return engine


class BotoEngine:
    """Many small objects through the boto3 client, ``options.concurrency`` requests at once."""

    name = "boto3"

    def __init__(self, client: S3Client) -> None:
        self._client = client
        self._concurrency = client.options.concurrency

    def unsupported(self, args: Mapping[str, Any]) -> str | None:
        """None: boto3 sends every PutObject argument."""
        return None

    def put_many(
        self, bucket: str, jobs: Iterable[PutJob], on_stored: Callable[[UploadResult], None]
    ) -> list[UploadResult]:
        """Load and store every job with one PutObject each, at most ``concurrency`` at once."""

        def store(job: PutJob) -> UploadResult:
            request = job.load()
            result = self._client.put_object(
                bucket, request.key, request.body, args=request.args, sha256=request.sha256
            )
            on_stored(result)
            return result

        return list(bounded_map(store, ((job, job.size) for job in jobs), self._concurrency, "s3-put"))

    def get_many(
        self,
        bucket: str,
        requests: Iterable[GetRequest],
        on_bytes: Callable[[int], None],
        on_done: Callable[[GetResult], None],
    ) -> None:
        """Download every object into its file, at most ``concurrency`` at once; see :class:`Engine`."""

        def download(request: GetRequest) -> GetResult:
            result = boto3_download(self._client, bucket, request, on_bytes)
            on_done(result)
            return result

        for _ in bounded_map(download, ((request, 0) for request in requests), self._concurrency, "s3-get"):
            pass

    def open(self, bucket: str, key: str, version_id: str = "", args: Mapping[str, Any] | None = None) -> ObjectBody:
        """Open a streaming GET of one object through the boto3 client."""
        return self._client.get_object(bucket, key, version_id, args)

    def close(self) -> None:
        """Nothing to release: the boto3 client is shared."""


def bounded_map(
    work: Callable[[T], R], items: Iterable[tuple[T, int]], workers: int, name: str, budget: int = MEMORY_BUDGET
) -> Iterator[R]:
    """Run ``work`` on every item in a thread pool, yielding results as they complete.

    Each item comes with its size in bytes: at most ``2 * workers`` items and ``budget`` bytes (but
    always at least one item) are in flight, so memory stays flat for any number of items. On the first
    failure nothing more is started, the items still queued are cancelled, and the failure is raised
    once the running ones have finished.
    """
    pending: dict[Future[R], int] = {}
    held = 0
    source = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        try:
            for item, size in source:
                while pending and (len(pending) >= 2 * workers or held + size > budget):
                    for future in _finished(pending):
                        held -= pending.pop(future)
                        yield future.result()
                pending[pool.submit(work, item)] = size
                held += size
            while pending:
                for future in _finished(pending):
                    held -= pending.pop(future)
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def _finished(pending: Mapping[Future[R], int]) -> set[Future[R]]:
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    return done
