"""The Airflow operators: ``S3PublishOperator`` and ``S3FetchOperator``."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAlias, BaseOperator

from airflow_s3_publisher.cancel import Cancellation
from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.extract import DEFAULT_MAX_EXTRACT_BYTES
from airflow_s3_publisher.fetching import fetch
from airflow_s3_publisher.links import PublishedResultLink
from airflow_s3_publisher.publishing import publish
from airflow_s3_publisher.result import PublishedResult, as_source
from airflow_s3_publisher.settings import PublishSettings

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_s3_publisher.filters import FileFilter
    from airflow_s3_publisher.options import TransferOptions

#: The template fields that every publishing task has.
PUBLISH_TEMPLATE_FIELDS = PublishSettings.TEMPLATED


class PublishingTask:
    """What a publishing task (operator or ``@task.s3_publish``) knows besides its source.

    Its settings are a :class:`~airflow_s3_publisher.settings.PublishSettings`, validated when the DAG
    is parsed; the templated ones (``PublishSettings.TEMPLATED``) are also attributes of the task, so
    Airflow renders them before :meth:`_publish` builds the final settings.
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

    def _init_publish_settings(self, given: dict[str, Any], asset_alias: str | None) -> None:
        self.settings = PublishSettings.build(**given)
        if asset_alias is not None and not asset_alias.strip():
            raise InvalidSpecError("asset_alias must be a non-empty name such as 'daily-report'")
        for name in PublishSettings.TEMPLATED:
            setattr(self, name, getattr(self.settings, name))
        self.asset_alias = asset_alias
        if asset_alias:
            self.outlets = [*self.outlets, AssetAlias(asset_alias)]

    def _publish(self, source: str, context: Context, logger: Any) -> dict[str, Any]:
        rendered = {name: getattr(self, name) for name in PublishSettings.TEMPLATED}
        result = publish(
            source,
            settings=PublishSettings.build(self.settings, **rendered),
            context=context,
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


class S3PublishOperator(PublishingTask, BaseOperator):
    """Publish a file or directory to S3-compatible storage and return the PublishedResult.

    Settings come from ``publisher`` (Bacalhau's declarative dict or ``s3://`` URI) and/or the keyword
    arguments, which win. Every setting that is not templated is validated when the DAG is parsed.

    The settings are those of :class:`~airflow_s3_publisher.settings.PublishSettings` (documented
    there) and of :class:`~airflow_s3_publisher.options.ObjectOptions`, by name; ``publisher``,
    ``bucket``, ``key``, ``endpoint``, ``region``, ``compress`` and ``aws_conn_id`` are templated.

    :param source: local file or directory to publish (templated).
    :param asset_alias: emit an Asset event for ``s3://<bucket>/<key>`` through ``AssetAlias(asset_alias)``
        (added to the task's outlets), with the PublishedResult as the event's ``extra``.

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
        publisher: str | Mapping[str, Any] | None = None,
        bucket: str | None = None,
        key: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        compress: bool | str | None = None,
        aws_conn_id: str | None = "aws_default",
        compression_level: int | None = None,
        manifest: bool = False,
        allow_empty: bool = False,
        include: Sequence[str] | str | None = None,
        exclude: Sequence[str] | str | None = None,
        file_filter: FileFilter | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        content_type: str | None = None,
        storage_class: str | None = None,
        server_side_encryption: str | None = None,
        kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
        transfer: TransferOptions | None = None,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Explicit parameters (not **kwargs) so that default_args and .partial()/.expand() reach them;
        # they are the settings' names, gathered here rather than spelled out again.
        given = {name: value for name, value in locals().items() if PublishSettings.accepts(name)}
        super().__init__(**kwargs)
        self._init_publish_settings(given, asset_alias)
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

    :param source: a PublishedResult dict, typically ``publish_task.output``, or its JSON text (what
        ``airflow-s3-publisher publish`` prints, so a BashOperator's ``output``), an ``s3://bucket/key``
        URI or an ``ObjectStoragePath`` (templated). Leave it out
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
        spec = as_source(source)
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
