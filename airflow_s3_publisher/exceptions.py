"""Every error this package raises, in one tree::

    S3PublisherError                  base of everything below: catch this one type
    ├── InvalidSpecError (ValueError) a spec, key template, bucket, endpoint, option or setting is not valid
    ├── SourceError (ValueError)      the local source is missing, unreadable, special or changed while read
    ├── PublishError                  publishing failed; nothing is reported as published
    │   └── PublishCancelledError     the publish was cancelled (task killed); in-flight uploads were aborted
    ├── FetchError                    fetching failed; the destination is left as it was
    │   ├── ChecksumMismatchError     downloaded bytes differ from the promised SHA-256 (``expected``, ``actual``)
    │   └── UnsafeArchiveError        an entry would land outside the destination, or an archive is too big
    └── S3RequestError                one S3 request failed (``operation``, ``bucket``, ``key``, ``code``, ...)

Errors about values the user gave also derive from :class:`ValueError`. Errors from botocore (or the
native engine) are translated at the S3 boundary into :class:`S3RequestError`, with the original kept
as ``__cause__``. No message holds credentials.
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatchError",
    "FetchError",
    "InvalidSpecError",
    "PublishCancelledError",
    "PublishError",
    "S3PublisherError",
    "S3RequestError",
    "SourceError",
    "UnsafeArchiveError",
]

#: S3 error codes that mean "no such object (or version)".
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NotFound", "404"})


class S3PublisherError(Exception):
    """Base class of every error raised by airflow-s3-publisher."""


class InvalidSpecError(S3PublisherError, ValueError):
    """A publisher spec, input source spec, key template, bucket, endpoint or option is not valid."""


class SourceError(S3PublisherError, ValueError):
    """The local source to publish is missing, unreadable, of an unsupported kind or changed while read."""


class PublishError(S3PublisherError):
    """Publishing failed; nothing is reported as published."""


class PublishCancelledError(PublishError):
    """The publish was cancelled (its task was killed); uploads in flight were aborted."""


class FetchError(S3PublisherError):
    """Fetching a published result failed; the destination is left as it was."""


class ChecksumMismatchError(FetchError):
    """The downloaded bytes do not have the SHA-256 that the published result promises.

    :param expected: the base64 SHA-256 the result promised.
    :param actual: the base64 SHA-256 of the bytes received.
    """

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


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

    @property
    def is_not_found(self) -> bool:
        """Whether S3 answered that the object (or the version asked for) does not exist."""
        return self.code in NOT_FOUND_CODES
