"""Published results as Airflow ``ObjectStoragePath`` s (read through s3fs, with an Airflow connection)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from airflow_s3_publisher.exceptions import InvalidSpecError, S3PublisherError
from airflow_s3_publisher.spec import is_aws_endpoint

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_s3_publisher.result import PublishedResult

__all__ = ["object_storage_path"]


def object_storage_path(result: PublishedResult, conn_id: str | None) -> ObjectStoragePath:
    """See :meth:`PublishedResult.object_storage_path`."""
    if importlib.util.find_spec("s3fs") is None:
        raise S3PublisherError(
            f"ObjectStoragePath for {result.uri} needs s3fs, which is not installed: "
            "install airflow-s3-publisher with its 'objectstorage' extra, i.e. 'apache-airflow-providers-amazon[s3fs]' "
            "(or use fetch(), which does not need it)"
        )
    from airflow.sdk import ObjectStoragePath

    if result.endpoint and conn_id:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        configured = S3Hook(aws_conn_id=conn_id).conn_config.get_service_endpoint_url("s3") or ""
        if not is_aws_endpoint(result.endpoint) and configured.rstrip("/") != result.endpoint.rstrip("/"):
            raise InvalidSpecError(
                f"{result.uri} was published to the endpoint {result.endpoint}, but connection {conn_id!r} points "
                f"at {configured or 'AWS'}; ObjectStoragePath takes the endpoint from the connection, so use "
                f"one whose endpoint_url is {result.endpoint}"
            )
    return ObjectStoragePath(result.uri, conn_id=conn_id)
