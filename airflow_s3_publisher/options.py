"""Options a publish or fetch takes besides its spec: per-object settings and transfer settings.

Pure logic: validates the values and builds the PutObject arguments; knows nothing of boto3.
"""

from __future__ import annotations

import functools
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from airflow_s3_publisher.exceptions import InvalidSpecError

__all__ = [
    "ENGINES",
    "MAX_METADATA_BYTES",
    "MiB",
    "SSE_MODES",
    "ObjectOptions",
    "TransferOptions",
    "guess_content_type",
]

MiB = 1024 * 1024
#: The request engines for many small objects; see :attr:`TransferOptions.engine`.
ENGINES = ("auto", "native", "boto3")
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
    base = name.rsplit("/", 1)[-1]
    first_dot = base.find(".", len(base) - len(base.lstrip(".")))  # a leading dot starts no suffix
    return _guess_from_suffixes(base[first_dot:] if first_dot >= 0 else "")


@functools.lru_cache(maxsize=512)
def _guess_from_suffixes(suffixes: str) -> str:
    # Only the suffixes decide the guess; one lookup per suffix chain, not one per file (a plain
    # publish asks once per file, and mimetypes parses every name as a URL first).
    guessed, _ = mimetypes.guess_type("file" + suffixes, strict=False)
    return guessed or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How bytes move: part size, parallelism, retries, timeouts, checksums and the request engine.

    :param part_size: multipart part size in bytes; an archive up to this size goes in one PUT.
    :param multipart_threshold: files of a plain publish up to this size go in one PUT each (many in
        parallel); larger ones go as multipart uploads.
    :param concurrency: requests in flight at once (files or parts) on the boto3 path; the parts of one
        multipart upload held in memory are capped near 64 MiB (at least one part).
    :param max_attempts: attempts per request, first included.
    :param retry_mode: botocore retry mode: ``standard``, ``adaptive`` or ``legacy``.
    :param connect_timeout: seconds to wait for a connection before retrying.
    :param read_timeout: seconds to wait for a response before retrying.
    :param checksums: send the SHA-256 of every object or part so S3 verifies what it receives; turn
        off only for stores that reject checksum headers.
    :param spool_archives: compress an archive into a temporary file (in ``TMPDIR``) before uploading
        it, so that even an archive larger than ``part_size`` carries its SHA-256 in its metadata.
        Costs disk space for the archive and time: compression and upload no longer overlap.
    :param engine: who sends the single-PUT objects of a plain publish and the GETs of a prefix fetch:
        ``auto`` (the native engine where it is installed and can send every option, else boto3),
        ``native`` (the native engine, or an error saying why it cannot serve) or ``boto3``.
    """

    part_size: int = 8 * MiB
    multipart_threshold: int = 16 * MiB
    concurrency: int = 8
    max_attempts: int = 5
    retry_mode: str = "standard"
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    checksums: bool = True
    spool_archives: bool = False
    engine: str = "auto"

    @property
    def parts_in_memory(self) -> int:
        """Parts of one multipart upload held at once: ``concurrency``, capped near 64 MiB in all."""
        return max(1, min(self.concurrency, (64 * MiB) // self.part_size))

    def __post_init__(self) -> None:
        if self.part_size < 5 * MiB:
            raise InvalidSpecError(f"part_size {self.part_size} is below S3's minimum of 5 MiB (5242880 bytes)")
        if self.multipart_threshold < 1:
            raise InvalidSpecError(f"multipart_threshold {self.multipart_threshold} must be at least 1 byte")
        if self.concurrency < 1:
            raise InvalidSpecError(f"concurrency {self.concurrency} must be at least 1")
        if self.max_attempts < 1:
            raise InvalidSpecError(f"max_attempts {self.max_attempts} must be at least 1")
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise InvalidSpecError(f"retry_mode {self.retry_mode!r} must be 'standard', 'adaptive' or 'legacy'")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidSpecError(f"{name} {value!r} must be a number of seconds above 0")
        if self.engine not in ENGINES:
            raise InvalidSpecError(f"engine {self.engine!r} must be one of {', '.join(map(repr, ENGINES))}")
