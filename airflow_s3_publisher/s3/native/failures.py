"""Reading obstore's errors: the S3 answer (status, code, message, request id) or the network failure,
whether it is worth retrying, and the :class:`S3RequestError` the boto3 path would raise for it."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from html import unescape
from typing import TYPE_CHECKING

from airflow_s3_publisher.exceptions import S3RequestError
from airflow_s3_publisher.s3.errors import explain, where

if TYPE_CHECKING:
    from airflow_s3_publisher.s3.native.credentials import CredentialBridge

__all__ = ["BACKOFF_BASE", "BACKOFF_MAX", "Failure", "backoff_seconds", "classify", "request_error"]

#: Backoff before attempt n+1 is uniform in [0, min(BACKOFF_MAX, BACKOFF_BASE * 2**(n-1))] (as botocore's
#: standard retry mode).
BACKOFF_BASE = 1.0
BACKOFF_MAX = 20.0
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RETRY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
    }
)
#: How obstore's HTTP error kinds read in errors and logs (botocore's names for the same failures).
_NETWORK_CODES = {
    "Connect": "EndpointConnectionError",
    "Timeout": "ReadTimeoutError",
    "Request": "ConnectionClosedError",
    "Interrupted": "ConnectionClosedError",
    "Decode": "ResponseStreamingError",
    "Unknown": "HTTPClientError",
}


def backoff_seconds(attempt: int) -> float:
    """How long to wait after failed attempt ``attempt`` (1 for the first), as botocore's standard mode."""
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)))  # noqa: S311 - jitter


@dataclass(frozen=True, slots=True)
class Failure:
    """What one failed attempt amounts to."""

    status: int | None
    code: str
    message: str
    request_id: str
    retryable: bool

    @property
    def reason(self) -> str:
        """How the failure reads in a retry warning, e.g. ``HTTP 503 SlowDown``."""
        return f"HTTP {self.status} {self.code}".strip() if self.status else self.code


_STATUS = re.compile(r"non-2xx status code: (\d{3})|\bstatus: (\d{3})")
_KIND = re.compile(r"\bkind: (Connect|Request|Timeout|Interrupted|Decode|Unknown)\b")


def _xml(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>([^<]*)</{tag}>", text)
    return unescape(match.group(1)) if match else ""


def classify(err: BaseException, bridge: CredentialBridge) -> Failure:
    """Read an obstore error: HTTP status and S3 error (code, message, request id), or a network failure."""
    text = str(err)
    shown = text.split("\n\nDebug source:", 1)[0]
    if "External AWS credential provider" in text:
        cause = bridge.error
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else "the provider failed"
        return Failure(None, "CredentialsError", detail, "", retryable=False)
    status_match = _STATUS.search(shown) or _STATUS.search(text)
    if status_match:
        status = int(status_match.group(1) or status_match.group(2))
        code = _xml(shown, "Code") or _xml(text.replace('\\"', '"'), "Code")
        message = _xml(shown, "Message")
        request_id = _xml(shown, "RequestId")
        retryable = status in _RETRY_STATUSES or code in _RETRY_CODES
        return Failure(status, code, message, request_id, retryable)
    kind = _KIND.search(text)
    if kind:  # the first "kind:" is obstore's HttpError kind when there is one
        return Failure(None, _NETWORK_CODES[kind.group(1)], "", "", retryable=True)
    if "HTTP error" in text or "error sending request" in text:
        return Failure(None, "ConnectionClosedError", "", "", retryable=True)
    return Failure(None, type(err).__name__, shown[:200], "", retryable=False)


def request_error(
    failure: Failure, operation: str, bucket: str, key: str, attempts: int, endpoint: str
) -> S3RequestError:
    """The S3RequestError the boto3 path would raise for the same answer (same codes and hints)."""
    if failure.status is not None:
        return explain(
            operation,
            bucket,
            key,
            code=failure.code or str(failure.status),
            status=failure.status,
            request_id=failure.request_id,
            said=failure.message,
        )
    if failure.code == "CredentialsError":
        place = where(bucket, key)
        message = f"{operation} on {place} failed: the connection's credentials could not be had ({failure.message})"
    else:
        tries = f"after {attempts} attempts" if attempts > 1 else "on its only attempt"
        message = f"{operation} on {where(bucket, key)} failed {tries}: {failure.code} (endpoint {endpoint})"
    return S3RequestError(message, operation=operation, bucket=bucket, key=key, code=failure.code)
