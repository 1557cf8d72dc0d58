"""Translating botocore errors into :class:`S3RequestError`: the S3 code, what it means, what to do.

Every botocore error is translated here, with the original as ``__cause__``; messages are built from
the operation, bucket, key and what S3 answered, never from credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from airflow_s3_publisher.exceptions import S3RequestError

__all__ = ["explain", "translate_errors", "where"]

_HINTS = {
    "AccessDenied": "the credentials lack {permission} on arn:aws:s3:::{resource}",
    "AllAccessDisabled": "the credentials lack {permission} on arn:aws:s3:::{resource}",
    "NoSuchBucket": "bucket {bucket!r} does not exist (publishing never creates buckets)",
    "NoSuchKey": "there is no object s3://{bucket}/{key}",
    "NoSuchVersion": "the version asked for does not exist (any more) for s3://{bucket}/{key}",
    "InvalidAccessKeyId": "the access key id is not known to this S3 endpoint; check the Airflow AWS "
    "connection or the AWS_* environment variables",
    "SignatureDoesNotMatch": "the secret key does not match the access key; check the Airflow AWS "
    "connection or the AWS_* environment variables",
    "BadDigest": "the bytes S3 received do not match the SHA-256 that was sent; nothing was stored",
    "XAmzContentChecksumMismatch": "the bytes S3 received do not match the checksum that was sent",
    "InvalidRequest": "the store refused the request as sent; if it rejects checksum headers, publish and "
    "fetch with transfer=TransferOptions(checksums=False) (the CLI: --no-checksums)",
    "PermanentRedirect": "the bucket lives in another region; set region to the bucket's region",
    "AuthorizationHeaderMalformed": "the region used to sign does not match the bucket's region",
}
_NO_CHECKSUMS = "transfer=TransferOptions(checksums=False) (the CLI: --no-checksums)"
_CHECKSUM_HEADER = re.compile(r"(?i)x-amz-(checksum|sdk-checksum|trailer)")
_PERMISSION = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}


@contextmanager
def translate_errors(operation: str, bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn botocore errors raised inside the block into :class:`S3RequestError` (cause kept)."""
    try:
        yield
    except ClientError as err:
        raise _client_error(err, operation, bucket, key) from err
    except NoCredentialsError as err:
        raise S3RequestError(
            f"{operation} on {where(bucket, key)} failed: no AWS credentials were found in the Airflow "
            "connection, the environment, ~/.aws/credentials or an instance role",
            operation=operation,
            bucket=bucket,
            key=key,
            code="NoCredentials",
        ) from err
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as err:
        raise S3RequestError(
            f"{operation} on {where(bucket, key)} failed after retries: {type(err).__name__} ({_endpoint_of(err)})",
            operation=operation,
            bucket=bucket,
            key=key,
            code=type(err).__name__,
        ) from err
    except BotoCoreError as err:
        raise S3RequestError(
            f"{operation} on {where(bucket, key)} failed: {type(err).__name__}: {err}",
            operation=operation,
            bucket=bucket,
            key=key,
            code=type(err).__name__,
        ) from err


def where(bucket: str, key: str | None) -> str:
    """``s3://bucket/key``, or ``bucket 'name'`` when there is no key."""
    return f"s3://{bucket}/{key}" if key is not None else f"bucket {bucket!r}"


def _endpoint_of(err: BotoCoreError) -> str:
    url = getattr(err, "kwargs", {}).get("endpoint_url", "")
    return f"endpoint {url}" if url else "no answer from the endpoint"


def _client_error(err: ClientError, operation: str, bucket: str, key: str | None) -> S3RequestError:
    error = err.response.get("Error", {})
    meta = err.response.get("ResponseMetadata", {})
    return explain(
        operation,
        bucket,
        key,
        code=str(error.get("Code", "") or "Unknown"),
        status=meta.get("HTTPStatusCode"),
        request_id=str(meta.get("RequestId", "") or ""),
        said=str(error.get("Message", "") or ""),
    )


def explain(
    operation: str,
    bucket: str,
    key: str | None,
    *,
    code: str,
    status: int | None,
    request_id: str = "",
    said: str = "",
) -> S3RequestError:
    """The :class:`S3RequestError` for an error response: its code, status, and what it means to the user.

    :param said: the store's own message, used where the code has no hint of ours.
    """
    permission = _PERMISSION.get(operation, f"s3:{operation}")
    resource = bucket if operation == "ListObjectsV2" else f"{bucket}/{key if key is not None else '*'}"
    hint = _HINTS.get(code, said)
    hint = hint.format(permission=permission, resource=resource, bucket=bucket, key=key)
    # A bare 403 (HEAD responses have no body) is a refused permission; a 403 the store explains
    # (e.g. a path-style request to a virtual-host-only store) keeps the store's own words.
    if code in ("403", "Forbidden") or (status == 403 and code not in _HINTS and not said):
        hint = f"access denied: the credentials lack {permission} on arn:aws:s3:::{resource}"
    if code != "InvalidRequest" and _CHECKSUM_HEADER.search(said):
        hint += "; the store refuses checksum headers: publish and fetch with " + _NO_CHECKSUMS
    if code in ("404", "NotFound") and not hint:
        hint = f"not found: s3://{bucket}/{key}"
    message = f"{operation} on {where(bucket, key)} failed: {code}"
    if status:
        message += f" (HTTP {status})"
    if hint:
        message += f": {hint}"
    if request_id:
        message += f" [request id {request_id}]"
    return S3RequestError(
        message, operation=operation, bucket=bucket, key=key, code=code, status=status, request_id=request_id
    )
