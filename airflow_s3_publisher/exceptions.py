"""Every error this package raises.

All of them derive from :class:`S3PublisherError`, so callers can catch one type. Errors about values
the user gave also derive from :class:`ValueError`. Errors from botocore are translated at the S3
boundary into :class:`S3RequestError`, with the original kept as ``__cause__``.
"""

from __future__ import annotations


class S3PublisherError(Exception):
    """Base class of every error raised by airflow-s3-publisher."""


class InvalidSpecError(S3PublisherError, ValueError):
    """A publisher spec, input source spec, key template, bucket, endpoint or option is not valid."""


class SourceError(S3PublisherError, ValueError):
    """The local source to publish is missing, unreadable, of an unsupported kind or changed while read."""


class PublishError(S3PublisherError):
    """Publishing failed; nothing is reported as published."""


class FetchError(S3PublisherError):
    """Fetching a published result failed; the destination is left as it was."""


class ChecksumMismatchError(FetchError):
    """The downloaded bytes do not have the SHA-256 that the published result promises."""


class UnsafeArchiveError(FetchError):
    """An archive or prefix holds an entry that would be written outside the destination, or is too big."""


class S3RequestError(S3PublisherError):
    """An S3 request failed; carries the operation, bucket, key and the S3 error code.

    The message never contains credentials: it is built only from the operation name, the bucket, the
    key and the error code, status and request id that S3 returned.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        bucket: str,
        key: str | None = None,
        code: str = "",
        status: int | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.code = code
        self.status = status
        self.request_id = request_id
