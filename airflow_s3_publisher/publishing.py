"""``publish()``: what the operator runs, usable from any Python code. Plans, then transfers."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.exceptions import (
    InvalidSpecError,
    PublishCancelledError,
    PublishError,
    S3PublisherError,
    SourceError,
)
from airflow_s3_publisher.hashing import b64
from airflow_s3_publisher.naming import RunInfo
from airflow_s3_publisher.plan import PublishPlan, plan_publish, resolve_target
from airflow_s3_publisher.progress import LogLike, Progress, ProgressCallback
from airflow_s3_publisher.result import PublishedResult
from airflow_s3_publisher.s3 import S3Client, UploadResult, connect
from airflow_s3_publisher.settings import PublishSettings
from airflow_s3_publisher.uploads import Uploader, run_metadata

if TYPE_CHECKING:
    from airflow_s3_publisher.cancel import Cancellation
    from airflow_s3_publisher.spec import PublisherSpec

__all__ = ["publish"]

log = logging.getLogger(__name__)


def publish(
    source: str | os.PathLike[str],
    publisher: str | Mapping[str, Any] | PublisherSpec | None = None,
    *,
    settings: PublishSettings | None = None,
    context: Mapping[str, Any] | None = None,
    client: S3Client | None = None,
    now: datetime | None = None,
    logger: LogLike | None = None,
    on_progress: ProgressCallback | None = None,
    cancellation: Cancellation | None = None,
    **overrides: Any,
) -> PublishedResult:
    """Publish ``source`` (a file or a directory) to S3 and describe exactly what was stored.

    :param source: local file or directory. For a directory, every file below it is published.
    :param publisher: Bacalhau's declarative dict ``{"Type": "s3", "Params": {...}}`` or imperative
        URI ``s3://bucket/key,opt=endpoint=...,opt=region=...,opt=compress=true``.
    :param settings: a :class:`~airflow_s3_publisher.settings.PublishSettings`; ``publisher`` and
        ``overrides`` are applied on top of it.
    :param context: the Airflow task context; placeholders other than ``{date}``, ``{time}`` and
        ``{nodeID}`` need it, and it names the run in each object's metadata.
    :param client: an :class:`~airflow_s3_publisher.s3.S3Client` to use instead of building one from
        ``aws_conn_id``; the spec's endpoint and region, if set, must be the client's. A ``transfer``
        setting then replaces the client's part size, concurrency, checksums and engine (its retries and
        timeouts stay as the client was built).
    :param now: the clock reading for ``{date}`` and ``{time}`` (default: now, UTC).
    :param logger: where progress lines (every 10 s) and the summary go; this module's logger by default.
    :param on_progress: called with a :class:`~airflow_s3_publisher.progress.Snapshot` (source bytes and
        files done of their totals) about ten times a second, from the upload threads, and once at the end.
    :param cancellation: a :class:`~airflow_s3_publisher.cancel.Cancellation` that stops the publish
        from another thread or a signal handler (what the operators' ``on_kill`` pulls): the multipart
        uploads in flight are aborted and the publish raises :class:`PublishError`.
    :param overrides: any setting of :class:`~airflow_s3_publisher.settings.PublishSettings` (``bucket``,
        ``key``, ``compress``, ``manifest``, ``transfer``, ...) or of
        :class:`~airflow_s3_publisher.options.ObjectOptions` (``metadata``, ``tags``, ...).
    :returns: the PublishedResult. For an archive it carries the VersionID S3 returned and the base64
        SHA-256 of the whole stored object; for a plain publish both are empty, as in Bacalhau (or
        the manifest's, with ``manifest=True``).
    :raises InvalidSpecError: a bad spec, key, setting or placeholder (before anything is read or uploaded).
    :raises SourceError: a bad source, or a file that changed while it was published.
    :raises PublishError: the upload failed; nothing is reported as published.
    """
    logger = logger or log
    if publisher is not None:
        overrides["publisher"] = publisher
    chosen = PublishSettings.build(settings, **overrides)
    run = RunInfo.from_context(context)
    plan = plan_publish(source, chosen, resolve_target(chosen, run, now or datetime.now(UTC)))
    spec = plan.target.spec
    owned = client is None  # built here, so closed here (the native engine's stores and their connections)
    if client is None:
        client = connect(chosen.aws_conn_id, endpoint=spec.endpoint, region=spec.region, options=chosen.transfer)
    else:
        _check_client(client, spec)
        client = client.with_options(chosen.transfer)
    try:
        if cancellation is not None:
            cancellation.check()
        uploader = Uploader(
            client=client,
            bucket=spec.bucket,
            key=plan.target.key,
            objects=chosen.object_options,
            run_metadata=run_metadata(run),
            logger=logger,
            is_retry=run.try_number is not None and run.try_number > 1,
            started=datetime.now(UTC),
            cancellation=cancellation,
        )
        return _transfer(plan, chosen, uploader, logger, on_progress)
    finally:
        if owned:
            client.close()


def _check_client(client: S3Client, spec: PublisherSpec) -> None:
    for name, wanted, actual in (("endpoint", spec.endpoint, client.endpoint), ("region", spec.region, client.region)):
        if wanted and wanted.rstrip("/") != actual.rstrip("/"):
            raise InvalidSpecError(
                f"the publisher's {name} {wanted!r} is not the given client's {actual!r}; leave it out of the "
                "spec or pass a client built for it"
            )


def _transfer(
    plan: PublishPlan,
    settings: PublishSettings,
    uploader: Uploader,
    logger: LogLike,
    on_progress: ProgressCallback | None,
) -> PublishedResult:
    target = plan.target
    files = plan.files
    logger.info(
        "Publishing %d files (%.1f MB) from %s to %s%s",
        len(files),
        plan.total_bytes / 1e6,
        plan.source,
        target.uri,
        " as one tar.gz" if target.spec.compress else "",
    )
    progress = Progress(
        target.uri, total_bytes=plan.total_bytes, total_files=len(files), logger=logger, on_update=on_progress
    )
    version_id = checksum = ""
    stored: list[UploadResult] = []
    with _nothing_published(plan, stored):
        if target.spec.compress:
            uploaded = uploader.archive(plan.entries, settings.compression_level, progress)
            version_id, checksum = uploaded.version_id, b64(uploaded.sha256)
            stored_bytes = uploaded.size
            stored.append(uploaded)
        else:
            uploader.plain(plan.objects, progress, stored)
            stored_bytes = sum(r.size for r in stored)
            if plan.manifest_key is not None:
                written = uploader.manifest(plan.objects, stored)
                version_id, checksum = written.version_id, b64(written.sha256)
                stored.append(written)
    progress.finish()
    result = PublishedResult(
        bucket=target.spec.bucket,
        key=target.key,
        region=uploader.client.region,
        endpoint=uploader.client.endpoint,
        version_id=version_id,
        checksum_sha256=checksum,
    )
    seconds = progress.elapsed()
    logger.info(
        "Published %d objects, %d bytes to %s in %.2f s (%.1f MB/s)",
        len(stored),
        stored_bytes,
        result.uri,
        seconds,
        stored_bytes / max(seconds, 1e-9) / 1e6,
    )
    return result


@contextmanager
def _nothing_published(plan: PublishPlan, stored: list[UploadResult]) -> Iterator[None]:
    """The one place where a failed transfer becomes a :class:`PublishError` that says what is (not) there.

    S3 and disk errors and cancellations are wrapped (the original kept as the cause); source errors,
    other publish errors and interruptions pass as they are. An archive is never completed on failure;
    a plain prefix has no manifest, so a fetch refuses it.
    """
    try:
        yield
    except BaseException as err:
        cancelled = isinstance(err, PublishCancelledError)
        passes = isinstance(err, SourceError | PublishError) and not cancelled
        if passes or not isinstance(err, S3PublisherError | OSError):
            raise
        kind = PublishCancelledError if cancelled else PublishError
        if plan.target.spec.compress:
            raise kind(f"nothing was published to {plan.target.uri}: {err}") from err
        raise kind(
            f"the plain publish under {plan.target.uri} stopped after {len(stored)} of {len(plan.objects)} "
            f"objects: {err}. The prefix is incomplete (and has no manifest); a retry of the task uploads "
            "every object again"
        ) from err
