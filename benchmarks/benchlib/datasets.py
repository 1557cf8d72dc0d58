"""The benchmark datasets: generated on the fly into a work directory, never committed.

* ``small``: many 4 KiB files of random bytes (10,000; 2,000 with ``--quick``), in 100 subdirectories.
* ``small-lo``, ``small-hi``: the same with fewer and more files, for the scaling series (1,000 and
  100,000; 500 and 10,000 with ``--quick``), also in 100 subdirectories.
* ``big``: one file of random bytes (1 GiB; 256 MiB with ``--quick``).
* ``medium``: 10 MiB files of random bytes (100; 25 with ``--quick``).
* ``csv``: one CSV-like text file (1 GiB; 256 MiB with ``--quick``): ids, dates, times, repeated city
  and country names, categories, quantities and prices. A few distinct chunks of a few MiB are built in
  Python and written over and over, each time rotated at a random line boundary, so generation takes
  seconds while gzip (whose window is 32 KiB) still sees realistic, non-repeating text.
* ``csv-lo``, ``csv-hi``: the same text, smaller and larger, for the scaling series (256 MiB and 4 GiB;
  64 MiB and 512 MiB with ``--quick``).

A dataset already present with the same parameters (a ``.done`` marker) is reused.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_WRITE_BLOCK = 16 * MiB
_MARKER = ".done"


@dataclass(frozen=True)
class Sizes:
    """How big each dataset is."""

    small_files: int
    small_size: int
    big_size: int
    medium_files: int
    medium_size: int
    csv_size: int
    small_lo_files: int
    small_hi_files: int
    csv_lo_size: int
    csv_hi_size: int


FULL = Sizes(
    small_files=10_000,
    small_size=4 * KiB,
    big_size=GiB,
    medium_files=100,
    medium_size=10 * MiB,
    csv_size=GiB,
    small_lo_files=1_000,
    small_hi_files=100_000,
    csv_lo_size=256 * MiB,
    csv_hi_size=4 * GiB,
)
QUICK = Sizes(
    small_files=2_000,
    small_size=4 * KiB,
    big_size=256 * MiB,
    medium_files=25,
    medium_size=10 * MiB,
    csv_size=256 * MiB,
    small_lo_files=500,
    small_hi_files=10_000,
    csv_lo_size=64 * MiB,
    csv_hi_size=512 * MiB,
)
#: Every dataset there is, in the order they are described.
NAMES = ("small", "small-lo", "small-hi", "big", "medium", "csv", "csv-lo", "csv-hi")


@dataclass(frozen=True)
class Dataset:
    """One generated dataset: a directory (or a single file) and what it holds."""

    name: str
    path: Path
    files: int
    size: int
    description: str

    @property
    def is_file(self) -> bool:
        return self.path.is_file()


def params(name: str, sizes: Sizes) -> dict[str, int]:
    """What defines dataset ``name`` at ``sizes``: ``files`` and ``file_size``, or ``size`` of one file."""
    table = {
        "small": {"files": sizes.small_files, "file_size": sizes.small_size},
        "small-lo": {"files": sizes.small_lo_files, "file_size": sizes.small_size},
        "small-hi": {"files": sizes.small_hi_files, "file_size": sizes.small_size},
        "big": {"size": sizes.big_size},
        "medium": {"files": sizes.medium_files, "file_size": sizes.medium_size},
        "csv": {"size": sizes.csv_size},
        "csv-lo": {"size": sizes.csv_lo_size},
        "csv-hi": {"size": sizes.csv_hi_size},
    }
    if name not in table:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")
    return table[name]


def describe(name: str, sizes: Sizes) -> str:
    """A human description of dataset ``name`` at ``sizes``, e.g. ``10,000 files x 4 KiB random``."""
    spec = params(name, sizes)
    family = _family(name)
    if family == "small":
        return f"{spec['files']:,} files x {spec['file_size'] // KiB} KiB random"
    if family == "big":
        return f"1 file x {_human(spec['size'])} random"
    if family == "medium":
        return f"{spec['files']} files x {_human(spec['file_size'])} random"
    return f"1 CSV-like text file x {_human(spec['size'])}"


def expected(name: str, sizes: Sizes) -> tuple[int, int]:
    """Files and bytes dataset ``name`` holds at ``sizes`` (before it is generated; for estimates)."""
    spec = params(name, sizes)
    if "files" in spec:
        return spec["files"], spec["files"] * spec["file_size"]
    return 1, spec["size"]


def _family(name: str) -> str:
    """``small-hi`` -> ``small``: the generator a dataset uses."""
    return name.split("-", 1)[0]


def _human(size: int) -> str:
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GiB"
    return f"{size // MiB} MiB"


def make_datasets(root: Path, sizes: Sizes, names: Iterable[str], seed: int = 20240501) -> dict[str, Dataset]:
    """Create (or reuse) the named datasets below ``root``; returns them by name."""
    made: dict[str, Dataset] = {}
    for name in names:
        folder = root / name
        spec = params(name, sizes)
        wanted = {"params": spec, "seed": seed, "version": 2}
        marker = folder / _MARKER
        if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            _GENERATORS[_family(name)](folder, spec, random.Random(f"{seed}-{name}"))
            marker.write_text(json.dumps(wanted))
        made[name] = _describe_folder(name, folder, sizes)
    return made


def _describe_folder(name: str, folder: Path, sizes: Sizes) -> Dataset:
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != _MARKER]
    path = files[0] if _family(name) in ("big", "csv") else folder / "data"
    return Dataset(
        name=name,
        path=path,
        files=len(files),
        size=sum(p.stat().st_size for p in files),
        description=describe(name, sizes),
    )


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            block = min(_WRITE_BLOCK, remaining)
            out.write(os.urandom(block))
            remaining -= block


_SMALL_FOLDERS = 100


def _make_small(folder: Path, spec: dict[str, int], rng: random.Random) -> None:
    """``files`` files of ``file_size`` random bytes, spread round-robin over 100 subdirectories."""
    data = folder / "data"
    files, size = spec["files"], spec["file_size"]
    width = max(5, len(str(files - 1)))
    for sub in range(min(files, _SMALL_FOLDERS)):
        (data / f"d{sub:02d}").mkdir(parents=True)
    block = 8 * MiB // size or 1  # files per os.urandom call: one syscall per few MiB, not per file
    for first in range(0, files, block):
        view = memoryview(os.urandom(size * min(block, files - first)))
        for offset, index in enumerate(range(first, min(first + block, files))):
            path = data / f"d{index % _SMALL_FOLDERS:02d}" / f"f{index:0{width}d}.bin"
            with open(path, "wb") as out:
                out.write(view[offset * size : (offset + 1) * size])


def _make_big(folder: Path, spec: dict[str, int], rng: random.Random) -> None:
    _write_random(folder / "big.bin", spec["size"])


def _make_medium(folder: Path, spec: dict[str, int], rng: random.Random) -> None:
    data = folder / "data"
    data.mkdir()
    for index in range(spec["files"]):
        _write_random(data / f"part-{index:03d}.bin", spec["file_size"])


_CITIES = (
    ("Berlin", "DE"),
    ("Hamburg", "DE"),
    ("Munich", "DE"),
    ("Paris", "FR"),
    ("Lyon", "FR"),
    ("Marseille", "FR"),
    ("Madrid", "ES"),
    ("Barcelona", "ES"),
    ("Valencia", "ES"),
    ("Rome", "IT"),
    ("Milan", "IT"),
    ("Naples", "IT"),
    ("Lisbon", "PT"),
    ("Porto", "PT"),
    ("Amsterdam", "NL"),
    ("Rotterdam", "NL"),
    ("Brussels", "BE"),
    ("Antwerp", "BE"),
    ("Vienna", "AT"),
    ("Zurich", "CH"),
    ("Geneva", "CH"),
    ("Warsaw", "PL"),
    ("Krakow", "PL"),
    ("Prague", "CZ"),
    ("Budapest", "HU"),
    ("Stockholm", "SE"),
    ("Gothenburg", "SE"),
    ("Oslo", "NO"),
    ("Copenhagen", "DK"),
    ("Helsinki", "FI"),
    ("Dublin", "IE"),
    ("London", "GB"),
    ("Manchester", "GB"),
    ("Edinburgh", "GB"),
    ("New York", "US"),
    ("Chicago", "US"),
    ("San Francisco", "US"),
    ("Toronto", "CA"),
    ("Sao Paulo", "BR"),
    ("Tokyo", "JP"),
)
_CITY_WEIGHTS = tuple(1.0 / (rank + 1) ** 0.8 for rank in range(len(_CITIES)))  # a few big cities dominate
_CATEGORIES = ("electronics", "books", "garden", "toys", "grocery", "clothing", "sports", "beauty", "office")
_STATUSES = ("delivered", "delivered", "delivered", "shipped", "shipped", "pending", "returned", "cancelled")
_HEADER = b"order_id,order_date,order_time,city,country,category,sku,quantity,unit_price,total,status,customer_id\n"
_CHUNK_BYTES = 4 * MiB
_DISTINCT_CHUNKS = 4


def _csv_chunk(rng: random.Random, first_id: int, first_day: date) -> bytes:
    days = [(first_day + timedelta(days=offset)).isoformat() for offset in range(90)]
    lines: list[str] = []
    size = 0
    order_id = first_id
    cities = rng.choices(_CITIES, weights=_CITY_WEIGHTS, k=4096)
    while size < _CHUNK_BYTES:
        order_id += rng.randint(1, 3)
        city, country = cities[order_id % 4096]
        quantity = rng.randint(1, 12)
        cents = rng.randrange(99, 49_999)
        line = (
            f"{order_id},{days[(order_id // 4000) % 90]},"
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d},{city},{country},"
            f"{_CATEGORIES[cents % 9]},SKU-{cents % 2000:05d},{quantity},{cents / 100:.2f},"
            f"{quantity * cents / 100:.2f},{_STATUSES[order_id % 8]},C{rng.randrange(200_000):06d}\n"
        )
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


def _make_csv(folder: Path, spec: dict[str, int], rng: random.Random) -> None:
    total = spec["size"]
    chunks = [
        _csv_chunk(rng, first_id=1_000_000 * (n + 1), first_day=date(2023, 1, 1) + timedelta(days=90 * n))
        for n in range(_DISTINCT_CHUNKS)
    ]
    with open(folder / "orders.csv", "wb") as out:
        out.write(_HEADER)
        written = len(_HEADER)
        round_ = 0
        while written < total:
            index = round_ % _DISTINCT_CHUNKS
            chunk = chunks[index]
            cut = chunk.find(b"\n", rng.randrange(len(chunk))) + 1  # a random line start (0 past the last)
            piece = chunk[cut:] + chunk[:cut]  # rotated at a line boundary: each copy differs
            piece = piece[: total - written]
            if len(piece) < len(chunk):  # end on a whole line
                piece = piece[: piece.rfind(b"\n") + 1] or piece
            out.write(piece)
            written += len(piece)
            round_ += 1
            if len(piece) < len(chunk):
                break


_GENERATORS = {"small": _make_small, "big": _make_big, "medium": _make_medium, "csv": _make_csv}
