"""The Airflow operators: ``S3PublishOperator`` and ``S3FetchOperator``."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAlias, BaseOperator

from airflow_s3_publisher.cancel import Cancellation
from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.fetching import fetch
from airflow_s3_publisher.links import PublishedResultLink
from airflow_s3_publisher.options import ObjectOptions
from airflow_s3_publisher.packing import DEFAULT_MAX_EXTRACT_BYTES, check_compression_level
from airflow_s3_publisher.publishing import publish
from airflow_s3_publisher.result import PublishedResult
from airflow_s3_publisher.spec import check_static_settings

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_s3_publisher.s3 import TransferOptions

#: The template fields that every publishing task has.
PUBLISH_TEMPLATE_FIELDS = ("bucket", "key", "endpoint", "region", "compress", "publisher", "aws_conn_id")
#: The other publish settings, which are not templated.
PUBLISH_OPTION_NAMES = (
    "compression_level",
    "manifest",
    "allow_empty",
    "metadata",
    "tags",
    "content_type",
    "storage_class",
    "server_side_encryption",
    "kms_key_id",
    "expected_bucket_owner",
    "asset_alias",
    "transfer",
)


class PublishSettings:
    """What a publishing task (operator or ``@task.s3_publish``) knows besides its source.

    The parameters are documented on :class:`S3PublishOperator`.
    """

    bucket: str | None
    key: str | None
    endpoint: str | None
    region: str | None
    compress: bool | str | None
    publisher: str | Mapping[str, Any] | None
    aws_conn_id: str | None
    published: PublishedResult | None = None
    outlets: list[Any]
    #: The current run's stop switch: made when execute starts, pulled by on_kill.
    cancellation: Cancellation | None = None

    def _init_publish_settings(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        compress: bool | str = False,
        publisher: str | Mapping[str, Any] | None = None,
        aws_conn_id: str | None = "aws_default",
        compression_level: int | None = None,
        manifest: bool = False,
        allow_empty: bool = False,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        content_type: str | None = None,
        storage_class: str | None = None,
        server_side_encryption: str | None = None,
        kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
        asset_alias: str | None = None,
        transfer: TransferOptions | None = None,
    ) -> None:
        self.object_options = ObjectOptions(
            metadata=dict(metadata or {}),
            tags=dict(tags or {}),
            content_type=content_type,
            storage_class=storage_class,
            server_side_encryption=server_side_encryption,
            kms_key_id=kms_key_id,
            expected_bucket_owner=expected_bucket_owner,
        )
        # An explicit compress=False must not override a publisher that says compress=true.
        explicit_compress = None if compress is False and publisher is not None else compress
        check_static_settings(
            publisher, bucket=bucket, key=key, endpoint=endpoint, region=region, compress=explicit_compress
        )
        check_compression_level(compression_level)
        if asset_alias is not None and not asset_alias.strip():
            raise InvalidSpecError("asset_alias must be a non-empty name such as 'daily-report'")
        self.bucket = bucket
        self.key = key
        self.endpoint = endpoint
        self.region = region
        self.compress = explicit_compress
        self.publisher = publisher
        self.aws_conn_id = aws_conn_id
        self.compression_level = compression_level
        self.manifest = manifest
        self.allow_empty = allow_empty
        self.asset_alias = asset_alias
        self.transfer = transfer
        if asset_alias:
            self.outlets = [*self.outlets, AssetAlias(asset_alias)]

    def _publish(self, source: str, context: Context, logger: Any) -> dict[str, Any]:
        result = publish(
            source,
            self.publisher,
            context=context,
            aws_conn_id=self.aws_conn_id,
            bucket=self.bucket,
            key=self.key,
            endpoint=self.endpoint,
            region=self.region,
            compress=self.compress,
            compression_level=self.compression_level,
            manifest=self.manifest,
            allow_empty=self.allow_empty,
            object_options=self.object_options,
            transfer=self.transfer,
            logger=logger,
            cancellation=self.cancellation,
        )
        self.published = result
        if self.asset_alias:
            from airflow.sdk import Asset

            # The key is only known now, hence an alias: the event names the real s3:// asset and
            # carries the PublishedResult, so a consumer can fetch exactly this version.
            context["outlet_events"][AssetAlias(self.asset_alias)].add(Asset(result.uri), extra=result.to_dict())
        return result.to_dict()

    def _cancel_publish(self, task_id: str, logger: Any) -> None:
        """What ``on_kill`` does: abort the multipart uploads in flight and make the publish fail."""
        if self.cancellation is None:
            logger.info("Task %s stopped before it started publishing: nothing to abort", task_id)
            return
        self.cancellation.cancel(f"Airflow stopped the task {task_id}")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any] | None:
        """OpenLineage: the published object or prefix as output dataset (``s3://<bucket>``, ``<key>``)."""
        if self.published is None:
            return None
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:  # the openlineage provider is optional
            return None
        source = getattr(self, "source", None)
        inputs = [Dataset(namespace=f"file://{socket.getfqdn()}", name=str(source))] if source else []
        outputs = [Dataset(namespace=f"s3://{self.published.bucket}", name=self.published.key)]
        return OperatorLineage(inputs=inputs, outputs=outputs)


class S3PublishOperator(PublishSettings, BaseOperator):
    """Publish a file or directory to S3-compatible storage and return the PublishedResult.

    Settings come from ``publisher`` (Bacalhau's declarative dict or ``s3://`` URI) and/or the keyword
    arguments, which win. Every setting that is not templated is validated when the DAG is parsed.

    :param source: local file or directory to publish (templated).
    :param bucket: bucket name (templated).
    :param key: object key or prefix template (templated); Jinja first, then the placeholders
        ``{jobID}``, ``{executionID}``, ``{date}``, ``{time}``, ``{nodeID}``, ``{dagID}``, ``{taskID}``,
        ``{runID}``, ``{mapIndex}``, ``{tryNumber}``. Compressed keys get ``.tar.gz`` appended unless
        they end with it; plain keys get ``/`` appended unless they end with it.
    :param endpoint: S3 endpoint URL for S3-compatible stores (templated); path-style addressing.
    :param region: region name (templated); default the connection's, then boto3's chain.
    :param compress: publish one tar.gz instead of one object per file (templated).
    :param publisher: ``{"Type": "s3", "Params": {...}}`` or ``s3://bucket/key,opt=name=value,...``
        (templated).
    :param aws_conn_id: Airflow AWS connection for credentials (templated); where it has none,
        boto3's default chain (environment, ``~/.aws/credentials``, instance roles).
    :param compression_level: gzip level on zlib's 1-9 scale; ``None`` picks the fast default.
    :param manifest: for a plain publish, write a manifest last (path, size, SHA-256 of every file) so
        ``fetch`` can verify the prefix and refuse an incomplete one; the result then carries the
        manifest's VersionID and ChecksumSHA256.
    :param allow_empty: publish an empty source instead of failing.
    :param metadata: user metadata for every object (besides the run's dag_id, run_id, task_id, try_number).
    :param tags: object tags, sent in the PutObject request.
    :param content_type: Content-Type of every object (default: guessed per file; archives application/gzip).
    :param storage_class: S3 storage class, e.g. ``STANDARD_IA``.
    :param server_side_encryption: ``AES256``, ``aws:kms`` or ``aws:kms:dsse``.
    :param kms_key_id: KMS key id for ``aws:kms``.
    :param expected_bucket_owner: 12-digit account id sent as ExpectedBucketOwner on every request.
    :param asset_alias: emit an Asset event for ``s3://<bucket>/<key>`` through ``AssetAlias(asset_alias)``
        (added to the task's outlets), with the PublishedResult as the event's ``extra``.
    :param transfer: :class:`~airflow_s3_publisher.s3.TransferOptions` (part size, concurrency,
        retries, timeouts, checksums).

    Returns (and so pushes to XCom) ``{"Type": "s3", "Params": {"Bucket", "Key", "Region", "Endpoint",
    "VersionID", "ChecksumSHA256"}}``.
    """

    template_fields: Sequence[str] = ("source", *PUBLISH_TEMPLATE_FIELDS)
    template_fields_renderers = {"publisher": "json"}
    operator_extra_links = (PublishedResultLink(),)
    ui_color = "#e8f4e4"

    def __init__(
        self,
        *,
        source: str,
        bucket: str | None = None,
        key: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        compress: bool | str = False,
        publisher: str | Mapping[str, Any] | None = None,
        aws_conn_id: str | None = "aws_default",
        compression_level: int | None = None,
        manifest: bool = False,
        allow_empty: bool = False,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        content_type: str | None = None,
        storage_class: str | None = None,
        server_side_encryption: str | None = None,
        kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
        asset_alias: str | None = None,
        transfer: TransferOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._init_publish_settings(
            bucket=bucket,
            key=key,
            endpoint=endpoint,
            region=region,
            compress=compress,
            publisher=publisher,
            aws_conn_id=aws_conn_id,
            compression_level=compression_level,
            manifest=manifest,
            allow_empty=allow_empty,
            metadata=metadata,
            tags=tags,
            content_type=content_type,
            storage_class=storage_class,
            server_side_encryption=server_side_encryption,
            kms_key_id=kms_key_id,
            expected_bucket_owner=expected_bucket_owner,
            asset_alias=asset_alias,
            transfer=transfer,
        )
        self.source = source

    def execute(self, context: Context) -> dict[str, Any]:
        """Publish and return the PublishedResult dict."""
        self.cancellation = Cancellation(self.log)
        return self._publish(self.source, context, self.log)

    def on_kill(self) -> None:
        """Airflow stops the task (SIGTERM: marked failed or cleared, worker shutdown; execution_timeout):
        abort every multipart upload in flight; the publish then fails without uploading anything more."""
        self._cancel_publish(self.task_id, self.log)
        super().on_kill()


class S3FetchOperator(BaseOperator):
    """Download a published result (or any S3 input source spec), verify it and unpack it.

    :param source: a PublishedResult dict, typically ``publish_task.output`` (templated). Leave it out
        in a DAG scheduled on a publisher's Asset or AssetAlias: the result carried by the newest
        triggering asset event is fetched.
    :param destination: local directory to fetch into (templated).
    :param extract: unpack a ``.tar.gz`` object into ``destination``.
    :param filter: regex on the paths below a prefix; only matches are fetched (templated).
    :param aws_conn_id: Airflow AWS connection for credentials (templated).
    :param max_extract_bytes: stop unpacking an archive past this many bytes (decompression bombs).
    :param expected_bucket_owner: 12-digit account id sent as ExpectedBucketOwner on every request.

    Returns (and so pushes to XCom) the destination path as a string.
    """

    template_fields: Sequence[str] = ("source", "destination", "filter", "aws_conn_id")
    ui_color = "#e4ecf4"

    def __init__(
        self,
        *,
        destination: str,
        source: Mapping[str, Any] | Any = None,
        extract: bool = True,
        filter: str | None = None,  # noqa: A002 - the S3 input source calls it Filter
        aws_conn_id: str | None = "aws_default",
        max_extract_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
        expected_bucket_owner: str | None = None,
        transfer: TransferOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_extract_bytes = max_extract_bytes
        self.expected_bucket_owner = expected_bucket_owner
        self.source = source
        self.destination = destination
        self.extract = extract
        self.filter = filter
        self.aws_conn_id = aws_conn_id
        self.transfer = transfer
        self.fetched: PublishedResult | None = None

    def execute(self, context: Context) -> str:
        """Fetch and return the destination path."""
        source = self.source if self.source is not None else result_from_asset_events(context)
        spec = source if isinstance(source, PublishedResult) else PublishedResult.from_dict(source)
        path = fetch(
            spec,
            self.destination,
            aws_conn_id=self.aws_conn_id,
            extract=self.extract,
            filter=self.filter,
            max_extract_bytes=self.max_extract_bytes,
            expected_bucket_owner=self.expected_bucket_owner,
            transfer=self.transfer,
            logger=self.log,
        )
        self.fetched = spec
        return str(path)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any] | None:
        """OpenLineage: the fetched object or prefix as input dataset (``s3://<bucket>``, ``<key>``)."""
        if self.fetched is None:
            return None
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:  # the openlineage provider is optional
            return None
        return OperatorLineage(
            inputs=[Dataset(namespace=f"s3://{self.fetched.bucket}", name=self.fetched.key)],
            outputs=[Dataset(namespace=f"file://{socket.getfqdn()}", name=str(self.destination))],
        )


def result_from_asset_events(context: Mapping[str, Any]) -> dict[str, Any]:
    """The PublishedResult carried by the newest triggering asset event of this run."""
    events = context.get("triggering_asset_events") or {}
    candidates = [event for group in events.values() for event in group]
    for event in sorted(candidates, key=lambda e: str(getattr(e, "timestamp", "")), reverse=True):
        extra = getattr(event, "extra", None) or {}
        if isinstance(extra, Mapping) and str(extra.get("Type", "")).lower() == "s3" and "Params" in extra:
            return dict(extra)
    raise InvalidSpecError(
        "S3FetchOperator has no source and none of this run's triggering asset events carries a "
        "PublishedResult; pass source=publish_task.output, or schedule the DAG on a publisher's asset_alias"
    )
