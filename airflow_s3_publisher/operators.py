"""The Airflow operators: ``S3PublishOperator`` and ``S3FetchOperator``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_s3_publisher.fetching import fetch
from airflow_s3_publisher.options import ObjectOptions
from airflow_s3_publisher.packing import DEFAULT_MAX_EXTRACT_BYTES
from airflow_s3_publisher.publishing import publish
from airflow_s3_publisher.spec import check_static_settings

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_s3_publisher.s3 import TransferOptions


class S3PublishOperator(BaseOperator):
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
    :param transfer: :class:`~airflow_s3_publisher.s3.TransferOptions` (part size, concurrency,
        retries, timeouts, checksums).

    Returns (and so pushes to XCom) ``{"Type": "s3", "Params": {"Bucket", "Key", "Region", "Endpoint",
    "VersionID", "ChecksumSHA256"}}``.
    """

    template_fields: Sequence[str] = (
        "source",
        "bucket",
        "key",
        "endpoint",
        "region",
        "compress",
        "publisher",
        "aws_conn_id",
    )
    template_fields_renderers = {"publisher": "json"}
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
        transfer: TransferOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self.source = source
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
        self.transfer = transfer

    def execute(self, context: Context) -> dict[str, Any]:
        """Publish and return the PublishedResult dict."""
        result = publish(
            self.source,
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
            logger=self.log,
        )
        return result.to_dict()


class S3FetchOperator(BaseOperator):
    """Download a published result (or any S3 input source spec), verify it and unpack it.

    :param source: a PublishedResult dict, typically ``publish_task.output`` (templated).
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
        source: Mapping[str, Any] | Any,
        destination: str,
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

    def execute(self, context: Context) -> str:
        """Fetch and return the destination path."""
        path = fetch(
            self.source,
            self.destination,
            aws_conn_id=self.aws_conn_id,
            extract=self.extract,
            filter=self.filter,
            max_extract_bytes=self.max_extract_bytes,
            expected_bucket_owner=self.expected_bucket_owner,
            transfer=self.transfer,
            logger=self.log,
        )
        return str(path)
