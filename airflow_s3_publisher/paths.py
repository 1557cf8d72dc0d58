"""Path safety shared by listing, extracting and fetching: relative POSIX paths that stay inside a root.

Pure logic: the standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow_s3_publisher.exceptions import UnsafeArchiveError

__all__ = ["inside", "member_parts", "relpath_parts", "safe_join"]


def inside(path: str, root: str) -> bool:
    """Whether the absolute ``path`` is ``root`` itself or below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def member_parts(name: str, *, what: str = "archive member") -> tuple[str, ...]:
    """Split a tar member name into safe components; ``()`` for the archive root ("." or "./")."""
    if name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{what} {name!r} has an absolute path; refusing the archive")
    stripped = name
    while stripped.startswith("./"):
        stripped = stripped[2:]
    stripped = stripped.rstrip("/")
    if stripped in ("", "."):
        return ()
    return relpath_parts(stripped, what=what)


def relpath_parts(relpath: str, *, what: str) -> tuple[str, ...]:
    if not relpath:
        raise UnsafeArchiveError(f"{what} is empty; it names no file under the destination")
    if "\x00" in relpath:
        raise UnsafeArchiveError(f"{what} {relpath!r} contains a NUL character")
    if relpath.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{what} {relpath!r} is an absolute path; only relative paths are allowed")
    parts = tuple(relpath.split("/"))
    for part in parts:
        if part in ("", "."):
            raise UnsafeArchiveError(f"{what} {relpath!r} has an empty or '.' path component")
        # ".." split on backslashes too: "..\\x" would climb out wherever backslash is a separator.
        if ".." in part.split("\\"):
            raise UnsafeArchiveError(f"{what} {relpath!r} has a '..' component that would leave the destination")
    return parts


def safe_join(destination: Path, relpath: str) -> Path:
    """Map a POSIX path relative to an S3 prefix (an object key's suffix) to a path under ``destination``.

    Raises:
        UnsafeArchiveError: ``relpath`` is empty, absolute, contains NUL, an empty or ``.`` component,
            or a ``..`` component (also between backslashes), so it could not safely name a file
            strictly under ``destination``.
    """
    return Path(destination).joinpath(*relpath_parts(relpath, what="object key suffix"))
