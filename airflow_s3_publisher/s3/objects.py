"""What crosses the S3 seam: requests for one object and what S3 answered. Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["GetRequest", "GetResult", "ObjectBody", "PutJob", "PutRequest", "UploadResult"]


@dataclass(slots=True)
class UploadResult:
    """What S3 answered for one stored object."""

    key: str
    size: int
    sha256: bytes
    version_id: str = ""
    etag: str = ""


@dataclass(frozen=True, slots=True)
class PutRequest:
    """One object to store with a single PutObject.

    :param key: the object key.
    :param body: the whole content.
    :param sha256: SHA-256 of ``body``, already computed by the caller.
    :param args: PutObject arguments in boto3's names (``ContentType``, ``Metadata``, ``Tagging``,
        ``StorageClass``, ``ServerSideEncryption``, ``SSEKMSKeyId``, ``ExpectedBucketOwner``).
    """

    key: str
    body: bytes
    sha256: bytes
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class PutJob:
    """A small object to store: its size (to bound memory) and how to load its :class:`PutRequest`.

    ``load`` reads the file (refusing it if it changed) and runs on an engine's worker, so reading
    overlaps the requests in flight.
    """

    size: int
    load: Callable[[], PutRequest]


@dataclass(frozen=True, slots=True)
class GetRequest:
    """One object to download into a new file.

    :param key: the object key.
    :param path: the file to create; its parent directory exists.
    :param version_id: the version to read (the latest when empty).
    :param args: GetObject arguments in boto3's names (``ExpectedBucketOwner``).
    """

    key: str
    path: Path
    version_id: str = ""
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class GetResult:
    """What a download wrote: the request, the bytes written and their SHA-256."""

    request: GetRequest
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class ObjectBody:
    """An open GET: the streaming body and the object's size in bytes (None if not sent)."""

    stream: Any
    size: int | None
