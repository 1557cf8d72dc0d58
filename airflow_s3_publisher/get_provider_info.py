"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow (``airflow providers list`` shows it)."""
    from airflow_s3_publisher import __version__

    return {
        "package-name": "airflow-s3-publisher",
        "name": "S3 Publisher",
        "description": "Publish task output to S3-compatible storage, Bacalhau-style, and fetch it back verified.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "S3 Publisher",
                "external-doc-url": "https://github.com/airflow-s3-publisher/airflow-s3-publisher",
                "tags": ["aws", "s3"],
            }
        ],
        "operators": [{"integration-name": "S3 Publisher", "python-modules": ["airflow_s3_publisher.operators"]}],
        "task-decorators": [{"name": "s3_publish", "class-name": "airflow_s3_publisher.decorators.s3_publish_task"}],
        "extra-links": ["airflow_s3_publisher.links.PublishedResultLink"],
    }
