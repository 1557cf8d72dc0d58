"""gzip back-ends: the fastest installed implementation of zlib's API, and the level mapping.

gzip backends, fastest first: ``isal`` (python-isal, ``isal.isal_zlib``), ``zlib-ng``
(``zlib_ng.zlib_ng``), then the standard library's ``zlib``. All three write standard gzip that GNU
tar, gzip and :mod:`tarfile` read, and all three release the GIL while they compress, so a consumer
thread (hashing, uploading) runs alongside.

``compression_level`` is on zlib's scale: 0 stores (always done by stdlib zlib, because ISA-L has no
stored mode), 1 is fastest, 9 is smallest. Measured on 200 MB of generated CSV-like text, one core,
1 MiB chunks (isal 1.9.1, zlib-ng 1.1.0, CPython 3.11 zlib; a shared 2-core machine, so speeds are
good to about +-30%, ratios exact)::

    backend  level   time    speed       ratio
    zlib     1       1.60 s  125 MB/s    2.66
    zlib     2       1.96 s  102 MB/s    2.74
    zlib     3       3.24 s   62 MB/s    2.81
    zlib     6       6.44 s   31 MB/s    3.02
    zlib     9      10.99 s   18 MB/s    3.06
    isal     0       0.47 s  425 MB/s    2.25
    isal     1       0.49 s  409 MB/s    2.73
    isal     2       0.53 s  375 MB/s    2.76
    isal     3       0.77 s  260 MB/s    2.79
    zlib-ng  1       0.77 s  260 MB/s    2.01
    zlib-ng  2       1.38 s  146 MB/s    2.79
    zlib-ng  6       3.15 s   64 MB/s    3.03

Mapping of ``compression_level`` per backend; the default (``None``) is the fastest level whose ratio
is at least zlib level 1's:

* isal: default 1. 1 -> 1 (ratio 2.73, zlib 1: 2.66), 2 -> 2 (2.76, zlib 2: 2.74), 3..9 -> 3 (2.79,
  isal's best; zlib 3 gives 2.81, zlib 9 3.06, so 9 costs ~9% more bytes but runs 14x faster).
  isal level 0 is never used: its ratio is worse than zlib 1's.
* zlib-ng: default 2 (its level 1 has a much worse ratio than zlib 1); 1..9 as given.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_s3_publisher.exceptions import InvalidSpecError

__all__ = [
    "CHUNK_SIZE",
    "Backend",
    "Compressor",
    "Decompressor",
    "check_compression_level",
    "gzip_backend",
    "installed_backends",
    "select_backend",
]

CHUNK_SIZE = 1 << 20
"""Bytes read from a file, or written to one, at a time."""

_GZIP_WBITS = 31  # deflate in a gzip container; header mtime 0, no file name


class Compressor(Protocol):
    """A zlib-style compression object."""

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...
    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    """A zlib-style decompression object."""

    unconsumed_tail: bytes
    eof: bool

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Backend:
    """One gzip implementation and how zlib's levels 1-9 map onto its own."""

    name: str
    module: Any  # the module's zlib-like API: compressobj, decompressobj, error, DEFLATED
    default_level: int
    levels: tuple[int, ...]  # native level for zlib levels 1..9

    def compressor(self, native_level: int) -> Compressor:
        compressor: Compressor = self.module.compressobj(native_level, self.module.DEFLATED, _GZIP_WBITS)
        return compressor

    def decompressor(self) -> Decompressor:
        decompressor: Decompressor = self.module.decompressobj(_GZIP_WBITS)
        return decompressor


_STDLIB = Backend("zlib", zlib, 1, (1, 2, 3, 4, 5, 6, 7, 8, 9))


def _load_backends() -> tuple[Backend, ...]:
    found: list[Backend] = []
    try:
        from isal import isal_zlib
    except ImportError:
        pass
    else:
        found.append(Backend("isal", isal_zlib, 1, (1, 2, 3, 3, 3, 3, 3, 3, 3)))
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        found.append(Backend("zlib-ng", zlib_ng, 2, (1, 2, 3, 4, 5, 6, 7, 8, 9)))
    found.append(_STDLIB)
    return tuple(found)


# Installed backends, preferred first; the first one is used (tests replace this to force one).
_BACKENDS = _load_backends()


def installed_backends() -> tuple[Backend, ...]:
    """The installed gzip implementations, preferred first."""
    return _BACKENDS


def check_compression_level(level: object) -> None:
    """Refuse a ``compression_level`` that is not None or an integer 0-9 (zlib's scale)."""
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9):
        raise InvalidSpecError(
            f"compression_level must be an integer from 0 (store) through 1 (fastest) to 9 (smallest), "
            f"or None for the fast default; got {level!r}"
        )


def select_backend(level: int | None) -> tuple[Backend, int]:
    """The backend and its native level for ``level`` on zlib's 0-9 scale (``None``: the fast default)."""
    check_compression_level(level)
    if level == 0:
        return _STDLIB, 0
    backend = _BACKENDS[0]
    return backend, backend.default_level if level is None else backend.levels[level - 1]


def gzip_backend(level: int | None = None) -> str:
    """Name the gzip implementation and its native level used for ``level``, e.g. ``"isal level 1"``.

    ``level`` is on zlib's 0-9 scale (``None`` for the default); see the module docstring for the
    mapping. Raises InvalidSpecError for a level outside 0-9.
    """
    backend, native = select_backend(level)
    return f"{backend.name} level {native}"
