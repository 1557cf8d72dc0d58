"""Per-object settings (metadata, tags, content type, storage class, encryption, bucket owner).

Pure logic: validates the values and builds the PutObject arguments; knows nothing of boto3.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from airflow_s3_publisher.exceptions import InvalidSpecError

SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
_META_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")
_ACCOUNT = re.compile(r"^\d{12}$")
#: S3's limit on user metadata (keys and values together).
MAX_METADATA_BYTES = 2048


@dataclass(frozen=True, slots=True)
class ObjectOptions:
    """Settings sent with every object a publish stores (all optional).

    :param metadata: user metadata (``x-amz-meta-*``): ASCII names and values.
    :param tags: object tags, sent in the PutObject request itself (no PutObjectTagging call).
    :param content_type: Content-Type of every object; by default guessed from each file name for
        plain publishes and ``application/gzip`` for archives.
    :param storage_class: e.g. ``STANDARD_IA``, ``INTELLIGENT_TIERING``.
    :param server_side_encryption: ``AES256``, ``aws:kms`` or ``aws:kms:dsse``.
    :param kms_key_id: KMS key for ``aws:kms`` encryption.
    :param expected_bucket_owner: 12-digit account id; every request fails if the bucket belongs to
        another account (sent as ExpectedBucketOwner on every request, fetches included).
    """

    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    content_type: str | None = None
    storage_class: str | None = None
    server_side_encryption: str | None = None
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None

    def __post_init__(self) -> None:
        for name, value in self.metadata.items():
            if not isinstance(name, str) or not _META_KEY.match(name):
                raise InvalidSpecError(f"invalid metadata name {name!r}: use ASCII letters, digits, '-', '_' and '.'")
            if not isinstance(value, str) or not _PRINTABLE_ASCII.match(value):
                raise InvalidSpecError(f"invalid metadata value {value!r} for {name!r}: expected printable ASCII text")
        if sum(len(k) + len(v) for k, v in self.metadata.items()) > MAX_METADATA_BYTES - 512:
            raise InvalidSpecError(
                f"metadata is too large: S3 allows {MAX_METADATA_BYTES} bytes of user metadata per object, "
                "and the publisher needs about 512 of them"
            )
        if len(self.tags) > 10:
            raise InvalidSpecError(f"{len(self.tags)} tags given; S3 allows at most 10 per object")
        for name, value in self.tags.items():
            if not isinstance(name, str) or not 1 <= len(name) <= 128 or not isinstance(value, str) or len(value) > 256:
                raise InvalidSpecError(
                    f"invalid tag {name!r}={value!r}: names are 1-128 characters, values at most 256"
                )
        if self.server_side_encryption is not None and self.server_side_encryption not in SSE_MODES:
            raise InvalidSpecError(
                f"invalid server_side_encryption {self.server_side_encryption!r}: "
                f"expected one of {', '.join(SSE_MODES)}"
            )
        if self.kms_key_id and not (self.server_side_encryption or "").startswith("aws:kms"):
            raise InvalidSpecError("kms_key_id needs server_side_encryption='aws:kms' (or 'aws:kms:dsse')")
        if self.expected_bucket_owner is not None and not _ACCOUNT.match(self.expected_bucket_owner):
            raise InvalidSpecError(
                f"invalid expected_bucket_owner {self.expected_bucket_owner!r}: expected a 12-digit AWS account id"
            )
        if self.storage_class is not None and not re.fullmatch(r"[A-Z_]{2,40}", self.storage_class):
            raise InvalidSpecError(f"invalid storage_class {self.storage_class!r}: expected e.g. 'STANDARD_IA'")

    def request_args(self) -> dict[str, Any]:
        """Arguments every request carries (ExpectedBucketOwner)."""
        return {"ExpectedBucketOwner": self.expected_bucket_owner} if self.expected_bucket_owner else {}

    def put_args(self, name: str, *, archive: bool, metadata: Mapping[str, str]) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload arguments for the object holding file ``name``."""
        args = self.request_args()
        args["ContentType"] = self.content_type or guess_content_type(name, archive=archive)
        args["Metadata"] = {**metadata, **self.metadata}
        if self.tags:
            args["Tagging"] = urlencode(dict(self.tags))
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.server_side_encryption:
            args["ServerSideEncryption"] = self.server_side_encryption
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


def guess_content_type(name: str, *, archive: bool) -> str:
    """``application/gzip`` for archives, else a guess from the file name (``application/octet-stream``)."""
    if archive:
        return "application/gzip"
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"
