"""Helpers of the tests of listing, archiving and extracting (test_sources, test_compression, test_archive,
test_extract, test_paths): trees to publish, archives built by tarfile itself, extraction into a box."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_s3_publisher import extract_native
from airflow_s3_publisher.archive import write_tar_gz
from airflow_s3_publisher.compression import CHUNK_SIZE
from airflow_s3_publisher.extract import ExtractStats, extract_tar_gz

if TYPE_CHECKING:
    from airflow_s3_publisher.sources import SourceEntry

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
MiB = 1 << 20


def csv_like(n_bytes: int, seed: int = 0) -> bytes:
    lines = []
    size = 0
    i = seed
    while size < n_bytes:
        line = f"{i},2024-01-{i % 28 + 1:02d},user{i * 7919 % 10007},{i * 31 % 997}.{i % 100:02d},ok\n".encode()
        lines.append(line)
        size += len(line)
        i += 1
    return b"".join(lines)[:n_bytes]


def make_tree(root: Path) -> dict[str, bytes | None]:
    """Create a small nested tree under ``root``; return relpath -> content (None for directories)."""
    expected: dict[str, bytes | None] = {
        "a": None,
        "a/b": None,
        "a/b/c.csv": csv_like(5000),
        "a/b/big.bin": os.urandom(CHUNK_SIZE) + csv_like(CHUNK_SIZE + 12345),  # spans chunks
        "a/zero.txt": b"",
        "empty": None,
        "empty/nested-empty": None,
        "top.txt": b"top\n",
        "ünïcödé 日本/ファイル名.txt": "héllo wörld\n".encode(),
        "ünïcödé 日本": None,
        "long-" + "x" * 150: None,
        "long-" + "x" * 150 + "/" + "y" * 120 + ".txt": b"long name\n",
    }
    for rel, content in sorted(expected.items()):
        path = root / rel
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return expected


def snapshot(root: Path) -> dict[str, bytes | None]:
    """relpath -> content (None for directories) of everything under ``root``, links not followed."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[Path(dirpath, name).relative_to(root).as_posix()] = None
        for name in filenames:
            path = Path(dirpath, name)
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def archive(entries: list[SourceEntry], **kwargs: int | None) -> bytes:
    out = io.BytesIO()
    write_tar_gz(entries, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


class CountingReader:
    """A Readable that counts what was read; ``max_read`` mimics a network stream's short reads."""

    def __init__(self, data: bytes, max_read: int | None = None) -> None:
        self._stream = io.BytesIO(data)
        self._max_read = max_read
        self.consumed = 0

    def read(self, n: int) -> bytes:
        chunk = self._stream.read(n if self._max_read is None else min(n, self._max_read))
        self.consumed += len(chunk)
        return chunk


TAR_READERS: dict[str, type] = {"tarfile": tarfile.TarFile, "libarchive": extract_native._LibarchiveTar}
"""Each extractor's tar front end: what hands the guard a member's content (``extractfile``)."""


def extract(data: bytes, destination: Path, **kwargs: int) -> ExtractStats:
    destination.mkdir(parents=True, exist_ok=True)
    return extract_tar_gz(CountingReader(data), destination, **kwargs)


def build_archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """An archive built by tarfile itself, not by the code under test."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes | None = None,
    *,
    linkname: str = "",
    mode: int = 0o644,
    pax_headers: dict[str, str] | None = None,
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = 1_700_000_000
    if pax_headers:
        info.pax_headers = pax_headers
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    if kind == tarfile.REGTYPE:
        data = data or b""
        info.size = len(data)
    return info, data


def assert_only_dest(box: Path) -> None:
    assert sorted(os.listdir(box)) == ["dest"]
    assert sorted(os.listdir(box.parent)) == ["box"]
