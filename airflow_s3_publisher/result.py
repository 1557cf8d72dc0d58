"""The PublishedResult spec: what was published, and the S3 input source that fetches it back."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_s3_publisher.exceptions import InvalidSpecError

_PARAMS = {
    "bucket": "bucket",
    "key": "key",
    "region": "region",
    "endpoint": "endpoint",
    "versionid": "version_id",
    "checksumsha256": "checksum_sha256",
    "filter": "filter",
}


@dataclass(frozen=True, slots=True)
class PublishedResult:
    """Where a publish put its output, and how to check it.

    Its dict form (``to_dict``) is what the operator pushes to XCom and what ``fetch`` reads::

        {"Type": "s3", "Params": {"Bucket", "Key", "Region", "Endpoint", "VersionID", "ChecksumSHA256"}}

    ``key`` ends with ``/`` for a plain (per-file) publish: it is then a prefix. ``version_id`` and
    ``checksum_sha256`` (base64 SHA-256 of the whole stored object) are filled for archives only, as
    in Bacalhau. ``filter`` is the optional regex of the S3 input source, applied to keys below a prefix.
    """

    bucket: str
    key: str
    region: str = ""
    endpoint: str = ""
    version_id: str = ""
    checksum_sha256: str = ""
    filter: str = ""

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        """Whether the key names a prefix (a plain publish) rather than one object."""
        return self.key.endswith("/")

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON dict (safe for XCom); ``Filter`` appears only when set."""
        params: dict[str, str] = {
            "Bucket": self.bucket,
            "Key": self.key,
            "Region": self.region,
            "Endpoint": self.endpoint,
            "VersionID": self.version_id,
            "ChecksumSHA256": self.checksum_sha256,
        }
        if self.filter:
            params["Filter"] = self.filter
        return {"Type": "s3", "Params": params}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PublishedResult:
        """Read the dict form; param names are case-insensitive and a bare params dict is accepted."""
        if not isinstance(data, Mapping):
            raise InvalidSpecError(
                f"expected a PublishedResult dict such as {{'Type': 's3', 'Params': {{...}}}}, "
                f"not {type(data).__name__}"
            )
        top = {str(k).lower(): v for k, v in data.items()}
        if "params" in top:
            kind = top.get("type", "s3")
            if not isinstance(kind, str) or kind.strip().lower() != "s3":
                raise InvalidSpecError(f"invalid result type {kind!r}: expected 's3'")
            params = top["params"]
            if not isinstance(params, Mapping):
                raise InvalidSpecError(f"invalid result params {params!r}: expected a dict")
        else:
            params = data
        fields: dict[str, str] = {}
        for raw_name, value in params.items():
            name = _PARAMS.get(str(raw_name).lower())
            if name is None:
                raise InvalidSpecError(
                    f"unknown param {raw_name!r} in the S3 input source; valid ones are Bucket, Key, "
                    "Region, Endpoint, VersionID, ChecksumSHA256 and Filter"
                )
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidSpecError(f"invalid {raw_name} {value!r}: expected a string")
            fields[name] = value
        if not fields.get("bucket") or not fields.get("key"):
            raise InvalidSpecError(f"the S3 input source {dict(params)!r} needs both Bucket and Key")
        if fields.get("filter"):
            try:
                re.compile(fields["filter"])
            except re.error as err:
                raise InvalidSpecError(f"invalid Filter regex {fields['filter']!r}: {err}") from None
        if fields.get("checksum_sha256"):
            sha256_digest(fields["checksum_sha256"])
        return cls(**fields)


def sha256_digest(checksum: str) -> bytes:
    """The 32-byte digest a ChecksumSHA256 value stands for: base64, or hex with or without ``0x``."""
    text = checksum.strip()
    hex_text = text[2:] if text.lower().startswith("0x") else text
    if len(hex_text) == 64 and re.fullmatch(r"[0-9a-fA-F]{64}", hex_text):
        return bytes.fromhex(hex_text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise InvalidSpecError(
            f"invalid ChecksumSHA256 {checksum!r}: expected a SHA-256 digest in base64 (44 characters) "
            "or hex (64 digits, optionally prefixed with 0x)"
        )
    return raw
