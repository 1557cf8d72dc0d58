"""What the native engine can send: PutObject/GetObject arguments and keys obstore can address."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["GET_ARGS", "PUT_ARGS", "put_attributes", "unsupported", "unsupported_key"]

#: PutObject arguments (boto3's names) the engine sends; anything else needs the boto3 path.
PUT_ARGS = frozenset(
    {
        "ContentType",
        "Metadata",
        "Tagging",
        "StorageClass",
        "ServerSideEncryption",
        "SSEKMSKeyId",
        "ExpectedBucketOwner",
        "CacheControl",
        "ContentDisposition",
        "ContentEncoding",
        "ContentLanguage",
    }
)
#: GetObject arguments the engine sends.
GET_ARGS = frozenset({"ExpectedBucketOwner"})
_ATTRIBUTES = {
    "ContentType": "Content-Type",
    "StorageClass": "Storage-Class",
    "CacheControl": "Cache-Control",
    "ContentDisposition": "Content-Disposition",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
}
#: Metadata names obstore would send as one of the headers above instead of ``x-amz-meta-*``.
_RESERVED_METADATA = frozenset(
    name for attribute in _ATTRIBUTES.values() for name in (attribute.lower(), attribute.lower().replace("-", ""))
)
_SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unsupported(args: Mapping[str, Any], *, operation: str = "PutObject") -> str | None:
    """``None`` when the engine can send ``operation`` with ``args``; otherwise why it cannot.

    :param args: request arguments in boto3's names, as a PutRequest or GetRequest carries them.
    :param operation: ``PutObject`` (see :data:`PUT_ARGS`) or ``GetObject`` (``ExpectedBucketOwner``).
    """
    known = PUT_ARGS if operation == "PutObject" else GET_ARGS
    unknown = sorted(set(args) - known)
    if unknown:
        return f"the native engine cannot send {', '.join(unknown)}"
    sse = args.get("ServerSideEncryption")
    if sse and sse not in _SSE_MODES:
        return f"the native engine cannot send ServerSideEncryption={sse!r} (only {', '.join(_SSE_MODES)})"
    if args.get("SSEKMSKeyId") and not str(sse or "").startswith("aws:kms"):
        return "SSEKMSKeyId without ServerSideEncryption='aws:kms'"
    for name in args.get("Metadata") or {}:
        if name.lower() in _RESERVED_METADATA:
            return f"the native engine would send metadata {name!r} as a header of that name"
    tagging = args.get("Tagging")
    if tagging and not isinstance(tagging, str):
        return f"Tagging must be url-encoded text, got {type(tagging).__name__}"
    return None


def unsupported_key(key: str) -> str | None:
    """``None`` when the engine can address ``key`` exactly; otherwise why not.

    obstore's paths cannot start or end with ``/``, hold an empty segment (``a//b``), a ``.`` or
    ``..`` segment, or a control character; such keys need the boto3 path.
    """
    if not key or key.startswith("/") or key.endswith("/"):
        return f"key {key!r} starts or ends with '/'"
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            return f"key {key!r} has an empty, '.' or '..' segment"
    if _CONTROL.search(key):
        return f"key {key!r} holds a control character"
    return None


def put_attributes(args: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str] | None]:
    """obstore attributes (headers and ``x-amz-meta-*``) and tags for PutObject ``args``."""
    attributes = {header: str(args[name]) for name, header in _ATTRIBUTES.items() if args.get(name)}
    for name, value in (args.get("Metadata") or {}).items():
        attributes[str(name)] = str(value)
    tagging = args.get("Tagging")
    tags = dict(parse_qsl(tagging, keep_blank_values=True)) if tagging else None
    return attributes, tags
