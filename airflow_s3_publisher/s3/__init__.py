"""The S3 boundary: the only part of the package that knows boto3 (and the native engine).

:func:`connect` builds an :class:`S3Client` from an Airflow AWS connection; ``publish()`` and
``fetch()`` accept one. Errors are translated here into :class:`~airflow_s3_publisher.exceptions.S3RequestError`.
"""

from __future__ import annotations

from airflow_s3_publisher.s3.client import S3Client, connect
from airflow_s3_publisher.s3.engine import Engine
from airflow_s3_publisher.s3.multipart import MAX_PARTS, MultipartWriter
from airflow_s3_publisher.s3.objects import GetRequest, GetResult, ObjectBody, PutJob, PutRequest, UploadResult

__all__ = [
    "MAX_PARTS",
    "Engine",
    "GetRequest",
    "GetResult",
    "MultipartWriter",
    "ObjectBody",
    "PutJob",
    "PutRequest",
    "S3Client",
    "UploadResult",
    "connect",
]
