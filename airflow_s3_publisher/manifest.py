"""The manifest of a plain publish: written last, it lists every file with its size and SHA-256.

A consumer that finds the manifest knows the prefix is complete, and can check every object against
it. Pure logic: building and reading the JSON document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_s3_publisher.exceptions import FetchError
from airflow_s3_publisher.result import sha256_digest

#: The manifest's object name, right below the published prefix.
MANIFEST_NAME = ".s3-publisher-manifest.json"
FORMAT = "airflow-s3-publisher/manifest/v1"
_B64_SHA256 = re.compile(r"^[A-Za-z0-9+/]{43}=$")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One published file: its path below the prefix, size, base64 SHA-256 and stored version."""

    path: str
    size: int
    sha256: str
    version_id: str = ""


def build_manifest(prefix: str, entries: Sequence[ManifestEntry]) -> bytes:
    """The manifest document (deterministic JSON) for ``entries`` published below ``prefix``."""
    document = {
        "format": FORMAT,
        "prefix": prefix,
        "files": len(entries),
        "bytes": sum(e.size for e in entries),
        "entries": [
            {"path": e.path, "size": e.size, "sha256": e.sha256, "version_id": e.version_id}
            for e in sorted(entries, key=lambda e: e.path)
        ],
    }
    return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def parse_manifest(data: bytes, where: str) -> list[ManifestEntry]:
    """Read a manifest; anything malformed is a :class:`FetchError` naming ``where`` it came from."""
    try:
        document: Any = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT!r}")
        entries = [
            ManifestEntry(
                path=_string(item["path"]),
                size=_size(item["size"]),
                sha256=_checksum(item["sha256"]),
                version_id=_string(item.get("version_id", "")),
            )
            for item in document["entries"]
        ]
        if len(entries) != document["files"]:
            raise ValueError(f"it lists {len(entries)} entries but says {document['files']}")
    except (ValueError, KeyError, TypeError) as err:
        raise FetchError(f"the manifest {where} is not valid: {err}") from None
    return entries


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"expected a size in bytes, got {value!r}")
    return value


def _checksum(value: object) -> str:
    text = _string(value)
    if not _B64_SHA256.match(text):
        raise ValueError(f"{text!r} is not a base64 SHA-256")
    sha256_digest(text)
    return text
