"""The "Published result" extra link of the publish tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from airflow_s3_publisher.exceptions import S3PublisherError
from airflow_s3_publisher.result import PublishedResult
from airflow_s3_publisher.spec import is_aws_endpoint

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def result_url(result: PublishedResult) -> str:
    """Where a person can look at a result: the S3 console for AWS, the object's URL elsewhere."""
    if is_aws_endpoint(result.endpoint):
        query = {"region": result.region} if result.region else {}
        if result.is_prefix:
            query["prefix"] = result.key
            return f"https://s3.console.aws.amazon.com/s3/buckets/{quote(result.bucket)}?{urlencode(query)}"
        query["prefix"] = result.key
        return f"https://s3.console.aws.amazon.com/s3/object/{quote(result.bucket)}?{urlencode(query)}"
    parts = urlsplit(result.endpoint)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    # Built from scheme, host and port only: no user:password from a connection can reach the link.
    url = f"{parts.scheme}://{host}{port}/{quote(result.bucket)}/{quote(result.key)}"
    if result.version_id:
        url += "?" + urlencode({"versionId": result.version_id})
    return url


class PublishedResultLink(BaseOperatorLink):
    """Links a publish task to what it stored (computed from its PublishedResult XCom)."""

    name = "Published result"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The URL of the published object or prefix; empty when the task published nothing."""
        value: Any = XCom.get_value(ti_key=ti_key, key="return_value")
        if not value:
            return ""
        try:
            return result_url(PublishedResult.from_dict(value))
        except S3PublisherError:
            return ""
