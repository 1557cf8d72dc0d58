"""Extracting a tar.gz with libarchive reading the tar headers, and this package's guard doing every write.

:func:`extract_tar_gz` has the contract of :func:`airflow_s3_publisher.extract.extract_tar_gz` (same
refusals, errors, stats; the stream read to its end; the gzip CRC verified) and shares its code for
everything that touches safety: :class:`~airflow_s3_publisher.gunzip.GunzipReader` decompresses and
bounds metadata runs, :class:`~airflow_s3_publisher.extract.ExtractGuard` checks every member name and link
and makes every directory, file and link (``O_EXCL | O_NOFOLLOW`` opens, links last and re-checked).
libarchive (the system's ``libarchive.so.13``, through ctypes) only parses the decompressed tar stream:
ustar, pax, GNU long names and sparse files, in C, which is what Python's :mod:`tarfile` spends most of
its time on for archives of many small members. libarchive's own writer is never used: it needs
``chdir`` and creates escaping symlinks and device nodes.

:func:`choose_extractor` returns this extractor when libarchive loads, else the pure-Python one, logging
why. Only the C library is needed (Debian: ``libarchive13``; ``libarchive13t64`` from trixie on), no
Python package.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import locale
import os
import sysconfig
from ctypes import POINTER, byref, c_char_p, c_int, c_longlong, c_size_t, c_ssize_t, c_void_p
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from airflow_s3_publisher.compression import CHUNK_SIZE, installed_backends
from airflow_s3_publisher.exceptions import FetchError, S3PublisherError, UnsafeArchiveError
from airflow_s3_publisher.extract import (
    DEFAULT_MAX_EXTRACT_BYTES,
    DEFAULT_MAX_MEMBERS,
    ExtractGuard,
    ExtractStats,
    GunzipReader,
    Readable,
)
from airflow_s3_publisher.extract import extract_tar_gz as extract_with_tarfile

if TYPE_CHECKING:
    from airflow_s3_publisher.progress import LogLike

MIN_VERSION = 3_000_000
"""Oldest libarchive used (``archive_version_number()``; 3.0.0, 2011). Older ones fall back."""

_SONAMES = ("libarchive.so.13", "libarchive.13.dylib")

# libarchive return codes and file types (archive.h, archive_entry.h).
_EOF, _OK, _FATAL = 1, 0, -30
_AE_IFMT = 0o170000
_TYPES = {
    0o100000: b"0",  # regular
    0o040000: b"5",  # directory
    0o120000: b"2",  # symlink
    0o020000: b"3",  # character device
    0o060000: b"4",  # block device
    0o010000: b"6",  # FIFO
}
_READ_CALLBACK = ctypes.CFUNCTYPE(c_ssize_t, c_void_p, c_void_p, POINTER(c_void_p))
_TIME_T = ctypes.c_int64 if sysconfig.get_config_var("SIZEOF_TIME_T") == 8 else ctypes.c_long


class Extractor(Protocol):
    """The signature both extractors share (see :func:`airflow_s3_publisher.extract.extract_tar_gz`)."""

    def __call__(
        self, stream: Readable, destination: Path, *, max_bytes: int = ..., max_members: int = ...
    ) -> ExtractStats: ...


class LibarchiveUnavailableError(S3PublisherError):
    """libarchive cannot be used here; the message says why. :func:`choose_extractor` falls back instead."""


class _Lib:
    """The libarchive functions used, bound with ctypes (no errcheck wrappers: return codes are checked here)."""

    def __init__(self, dll: ctypes.CDLL) -> None:
        def bind(name: str, argtypes: list[Any], restype: Any) -> Any:
            function = getattr(dll, "archive_" + name)
            function.argtypes = argtypes
            function.restype = restype
            return function

        archive, entry = c_void_p, c_void_p
        self.version_number = bind("version_number", [], c_int)
        self.read_new = bind("read_new", [], archive)
        self.read_support_format_tar = bind("read_support_format_tar", [archive], c_int)
        self.read_support_filter_none = bind("read_support_filter_none", [archive], c_int)
        self.read_open = bind("read_open", [archive, c_void_p, c_void_p, _READ_CALLBACK, c_void_p], c_int)
        self.read_next_header = bind("read_next_header", [archive, POINTER(c_void_p)], c_int)
        self.read_data = bind("read_data", [archive, c_void_p, c_size_t], c_ssize_t)
        self.read_header_position = bind("read_header_position", [archive], c_longlong)
        self.filter_bytes = bind("filter_bytes", [archive, c_int], c_longlong)
        self.read_free = bind("read_free", [archive], c_int)
        self.error_string = bind("error_string", [archive], c_char_p)
        self.entry_pathname = bind("entry_pathname", [entry], c_char_p)
        self.entry_symlink = bind("entry_symlink", [entry], c_char_p)
        self.entry_hardlink = bind("entry_hardlink", [entry], c_char_p)
        self.entry_filetype = bind("entry_filetype", [entry], c_int)
        self.entry_mode = bind("entry_mode", [entry], c_int)
        self.entry_size = bind("entry_size", [entry], c_longlong)
        self.entry_mtime = bind("entry_mtime", [entry], _TIME_T)
        self.entry_mtime_nsec = bind("entry_mtime_nsec", [entry], ctypes.c_long)


def _open_library() -> ctypes.CDLL:
    errors: list[str] = []
    for name in _SONAMES:
        try:
            return ctypes.CDLL(name)
        except OSError as err:
            errors.append(str(err))
    found = ctypes.util.find_library("archive")  # runs ldconfig; only when the usual names failed
    if found:
        return ctypes.CDLL(found)
    raise OSError(errno.ENOENT, "; ".join(errors) or "libarchive not found")


@functools.cache
def _load() -> _Lib | str:
    """The bound library, or why it cannot be used (a sentence). Loaded once per process."""
    codeset = locale.nl_langinfo(locale.CODESET) if hasattr(locale, "nl_langinfo") else ""
    if codeset.replace("-", "").upper() != "UTF8":
        # libarchive converts pax (UTF-8) names to the C library's current locale; outside UTF-8 that
        # mangles non-ASCII names. Python coerces the C locale to C.UTF-8, so this is rare.
        return f"the process's locale codeset is {codeset or 'unknown'}, not UTF-8"
    try:
        lib = _Lib(_open_library())
        version = lib.version_number()
    except (OSError, AttributeError) as err:
        return f"libarchive cannot be loaded ({err})"
    if version < MIN_VERSION:
        return f"libarchive {version} is older than {MIN_VERSION}"
    return lib


def libarchive_problem() -> str | None:
    """Why libarchive's extractor cannot be used in this process (a sentence), or None when it can."""
    lib = _load()
    return None if isinstance(lib, _Lib) else lib


def libarchive_version() -> int | None:
    """``archive_version_number()`` of the libarchive in use (e.g. 3006002), or None when it is unavailable."""
    lib = _load()
    return lib.version_number() if isinstance(lib, _Lib) else None


def choose_extractor(log: LogLike | None = None) -> Extractor:
    """The extractor to use: libarchive's when it loads, else :func:`airflow_s3_publisher.extract.extract_tar_gz`.

    :param log: where the one line saying why libarchive is not used goes (only when falling back).
    """
    lib = _load()
    if isinstance(lib, _Lib):
        return extract_tar_gz
    if log is not None:
        log.info(
            "Extracting with Python's tarfile (slower for archives of many small files): %s. Install the "
            "system's libarchive (Debian: libarchive13) for the faster extractor",
            lib,
        )
    return extract_with_tarfile


def extract_tar_gz(
    stream: Readable,
    destination: Path,
    *,
    max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> ExtractStats:
    """Extract a tar.gz read from ``stream`` into ``destination``: libarchive parses, our guard writes.

    The contract of :func:`airflow_s3_publisher.extract.extract_tar_gz`, word for word: the same
    refusals (UnsafeArchiveError), the same FetchError for a stream that is not gzip, is corrupt or is
    truncated (a tar stream without its end-of-archive marker included), the same stats; the stream is
    read to its very end; nothing is written outside ``destination``.

    :param stream: the archive's bytes, read once, front to back (never seeked or closed).
    :param destination: an existing directory owned by the caller, normally empty; discard it on error.
    :param max_bytes: refuse the archive past this many extracted bytes (sparse holes count).
    :param max_members: refuse the archive past this many members.
    :raises LibarchiveUnavailableError: libarchive cannot be used here (see :func:`choose_extractor`).
    """
    lib = _load()
    if not isinstance(lib, _Lib):
        raise LibarchiveUnavailableError(f"cannot extract with libarchive: {lib}")
    root = os.path.realpath(destination)
    if not os.path.isdir(root):
        raise NotADirectoryError(errno.ENOTDIR, "extraction destination is not a directory", str(destination))
    reader = GunzipReader(stream, installed_backends()[0], ahead=True)
    try:
        extractor = ExtractGuard(root, reader, max_bytes=max_bytes, max_members=max_members)
        with _LibarchiveTar(lib, reader) as tar:
            extractor.run(tar)
        reader.finish()
    finally:
        reader.close()
    return ExtractStats(files=extractor.files, directories=extractor.directories, bytes=extractor.bytes)


class _Member(NamedTuple):  # a tuple: made once per member, cheaper than a frozen dataclass
    """A member as libarchive read it, with the :class:`tarfile.TarInfo` attributes the guard reads."""

    name: str
    linkname: str
    type: bytes
    """tarfile's type flag: b"0" regular, b"1" hard link, b"2" symlink, b"3"/b"4" devices, b"5" directory, b"6" FIFO."""
    mode: int
    mtime: float
    size: int

    def isreg(self) -> bool:
        return self.type == b"0"

    def islnk(self) -> bool:
        return self.type == b"1"

    def issym(self) -> bool:
        return self.type == b"2"

    def ischr(self) -> bool:
        return self.type == b"3"

    def isblk(self) -> bool:
        return self.type == b"4"

    def isdir(self) -> bool:
        return self.type == b"5"

    def isfifo(self) -> bool:
        return self.type == b"6"


def _text(raw: bytes | None) -> str:
    # As tarfile reads names (encoding="utf-8", errors="surrogateescape"): any bytes survive to os calls.
    return "" if raw is None else raw.decode("utf-8", "surrogateescape")


class _LibarchiveTar:
    """A libarchive read handle over the decompressed tar stream, iterated like a ``"r|"`` TarFile.

    libarchive pulls the bytes through a ctypes callback that reads :class:`GunzipReader`; an
    exception raised there (a truncated or corrupt gzip stream, a bomb of headers) cannot cross the C
    frames, so it is kept and raised again when libarchive reports the failure.
    """

    def __init__(self, lib: _Lib, reader: GunzipReader) -> None:
        self._lib = lib
        self._reader = reader
        self._failure: BaseException | None = None
        self._held = b""  # the block libarchive is reading; kept alive until the next callback
        self._callback = _READ_CALLBACK(self._read)  # referenced for as long as the handle lives
        self._entry = c_void_p()
        self._buffer = ctypes.create_string_buffer(CHUNK_SIZE)
        self._member: _Member | None = None
        self._archive = lib.read_new()
        if not self._archive:
            raise MemoryError("archive_read_new failed")
        try:
            lib.read_support_format_tar(self._archive)
            lib.read_support_filter_none(self._archive)
            if lib.read_open(self._archive, None, None, self._callback, None) != _OK:
                raise self._error("the archive is corrupt or truncated: not a tar archive")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _LibarchiveTar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the libarchive handle (it never closes ``reader``)."""
        if self._archive:
            self._lib.read_free(self._archive)
            self._archive = None

    def _read(self, _archive: int | None, _client: int | None, block: Any) -> int:
        try:
            data = self._reader.read(CHUNK_SIZE)
        except BaseException as err:  # noqa: BLE001 - kept, and raised again once libarchive returns
            self._failure = err
            return _FATAL
        self._held = data
        block[0] = ctypes.cast(c_char_p(data), c_void_p).value
        return len(data)

    def _error(self, what: str) -> BaseException:
        """The error of a failed libarchive call: what the read callback raised, else libarchive's reason."""
        failure, self._failure = self._failure, None
        if failure is not None:
            return failure
        message = self._lib.error_string(self._archive)
        detail = message.decode("utf-8", "replace") if message else "libarchive gave no reason"
        if "too large" in detail or "oversized" in detail:
            # libarchive's own cap on a pax or GNU long-name header (1 MiB in 3.6) is below ours
            # (the gunzip module's _MAX_METADATA_RUN): the same refusal, said the same way.
            return UnsafeArchiveError(
                f"archive has a tar header larger than libarchive reads ({detail}) after {self._reader.where}; "
                "refusing it as a decompression bomb"
            )
        return FetchError(f"{what} ({detail})")

    def next(self) -> _Member | None:
        """The next member, or None after the end-of-archive marker."""
        lib, entry = self._lib, self._entry
        code = lib.read_next_header(self._archive, byref(entry))
        if code == _EOF:
            self._member = None
            # libarchive also ends quietly where a member ends and the stream does; tarfile (and so the
            # other extractor) calls that truncated. One zero block is an end, as for tarfile.
            if lib.filter_bytes(self._archive, 0) - lib.read_header_position(self._archive) < 512:
                raise FetchError(
                    "the archive is corrupt or truncated: bad tar header (the tar stream ends without its "
                    "end-of-archive marker)"
                )
            return None
        if code != _OK:  # a warning too: a name that could not be read as it was written, a malformed pax record
            raise self._error("the archive is corrupt or truncated: bad tar header")
        name = _text(lib.entry_pathname(entry))
        hardlink = lib.entry_hardlink(entry)
        if hardlink is not None:
            kind, linkname = b"1", _text(hardlink)
        else:
            filetype = lib.entry_filetype(entry) & _AE_IFMT
            kind = _TYPES.get(filetype, b"%o" % filetype)
            linkname = _text(lib.entry_symlink(entry)) if kind == b"2" else ""
        if kind == b"5":
            name = name.rstrip("/")  # as tarfile does
        nsec = lib.entry_mtime_nsec(entry)
        mtime = lib.entry_mtime(entry)
        self._member = _Member(
            name=name,
            linkname=linkname,
            type=kind,
            mode=lib.entry_mode(entry) & 0o7777,
            mtime=mtime + nsec / 1e9 if nsec else mtime,
            size=lib.entry_size(entry),
        )
        return self._member

    def extractfile(self, member: _Member) -> _LibarchiveTar:
        """The content of ``member`` (the current one), read with ``read(n)``."""
        if member is not self._member:
            raise ValueError(f"{member.name!r} is not the current member")
        return self

    def read(self, n: int = CHUNK_SIZE, /) -> bytes:
        """Up to ``n`` bytes of the current member's content (sparse holes as zeros), b"" at its end."""
        count = self._lib.read_data(self._archive, self._buffer, min(n, CHUNK_SIZE) if n > 0 else CHUNK_SIZE)
        if count < 0:
            name = self._member.name if self._member is not None else ""
            raise self._error(f"the archive is truncated in member {name!r}")
        return ctypes.string_at(self._buffer, count)
