"""Publish what an Airflow task produced to S3-compatible storage, and fetch it back verified.

Public API: :class:`S3PublishOperator`, :class:`S3FetchOperator`, :func:`publish`, :func:`fetch`,
:class:`PublishedResult`, :class:`PublisherSpec`, :class:`ObjectOptions`, :class:`TransferOptions`,
:class:`Snapshot` and the exceptions.
The operators import Airflow; the rest works in any Python code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.exceptions import (
    ChecksumMismatchError,
    FetchError,
    InvalidSpecError,
    PublishError,
    S3PublisherError,
    S3RequestError,
    SourceError,
    UnsafeArchiveError,
)
from airflow_s3_publisher.options import ObjectOptions
from airflow_s3_publisher.progress import Snapshot
from airflow_s3_publisher.result import PublishedResult
from airflow_s3_publisher.spec import PublisherSpec, build_publisher_spec

__version__ = "0.1.0"

__all__ = [
    "ChecksumMismatchError",
    "FetchError",
    "InvalidSpecError",
    "ObjectOptions",
    "PublishError",
    "PublishedResult",
    "PublisherSpec",
    "S3FetchOperator",
    "S3PublishOperator",
    "S3PublisherError",
    "S3RequestError",
    "Snapshot",
    "SourceError",
    "TransferOptions",
    "UnsafeArchiveError",
    "build_publisher_spec",
    "fetch",
    "publish",
]

if TYPE_CHECKING:
    from airflow_s3_publisher.fetching import fetch
    from airflow_s3_publisher.operators import S3FetchOperator, S3PublishOperator
    from airflow_s3_publisher.options import TransferOptions
    from airflow_s3_publisher.publishing import publish

_LAZY = {
    "S3PublishOperator": "airflow_s3_publisher.operators",
    "S3FetchOperator": "airflow_s3_publisher.operators",
    "publish": "airflow_s3_publisher.publishing",
    "fetch": "airflow_s3_publisher.fetching",
    "TransferOptions": "airflow_s3_publisher.options",
}


def __getattr__(name: str) -> Any:
    # Lazy: importing the package for the provider entry point or a spec must not import Airflow's SDK.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_s3_publisher' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
