"""Everything a publish is told besides its source: one frozen, validated value.

``publish()``, the operators, ``@task.s3_publish`` and the CLI all build a :class:`PublishSettings`
(keyword arguments named after its fields, or after :class:`ObjectOptions`' fields, are routed by
:meth:`PublishSettings.build`), so each setting is spelled out once, here.

Pure logic: nothing here knows Airflow or boto3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_s3_publisher.compression import check_compression_level
from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.filters import FileFilter
from airflow_s3_publisher.options import ObjectOptions, TransferOptions
from airflow_s3_publisher.spec import PublisherSpec, build_publisher_spec, check_static_settings

__all__ = ["PublishSettings"]

_OBJECT_FIELDS = tuple(f.name for f in dataclasses.fields(ObjectOptions))


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """How and where to publish: Bacalhau's publisher spec plus this package's options.

    Settings come from ``publisher`` and/or the explicit fields, which win. Values still holding Jinja
    (``{{ ... }}``) are *templated*: they are checked once Airflow has rendered them; everything else
    is checked when the value is built (for an operator: when the DAG is parsed).

    :param publisher: Bacalhau's declarative ``{"Type": "s3", "Params": {...}}`` or imperative
        ``s3://bucket/key,opt=endpoint=...,opt=region=...,opt=compress=true`` (templated).
    :param bucket: bucket name (templated).
    :param key: object key or prefix template (templated): Jinja first, then the placeholders
        ``{jobID}``, ``{executionID}``, ``{date}``, ``{time}``, ``{nodeID}``, ``{dagID}``, ``{taskID}``,
        ``{runID}``, ``{mapIndex}``, ``{tryNumber}``. Compressed keys get ``.tar.gz`` appended unless
        they end with it; plain keys get ``/`` appended unless they end with it.
    :param endpoint: S3 endpoint URL for S3-compatible stores (templated); path-style addressing.
    :param region: region name (templated); default the connection's, then boto3's chain.
    :param compress: publish one tar.gz instead of one object per file (templated). ``None`` (not
        given): the publisher's Compress, else ``False``; an explicit ``False`` overrides the publisher.
    :param aws_conn_id: Airflow AWS connection for credentials (templated); where it has none (or is
        ``None``), boto3's default chain (environment, ``~/.aws/credentials``, instance roles).
    :param compression_level: gzip level on zlib's 1-9 scale; ``None`` picks the fast default.
    :param manifest: for a plain publish, write a manifest last (path, size, SHA-256 of every file) so
        ``fetch`` can verify the prefix and refuse an incomplete one; the result then carries the
        manifest's VersionID and ChecksumSHA256.
    :param allow_empty: publish an empty source (an empty archive, or no object at all for a plain
        publish) instead of refusing it.
    :param include: globs of the files to publish, relative to the source (``*.csv``, ``reports/**``);
        when given, no other file is published. A pattern without ``/`` matches names at any depth.
    :param exclude: globs of the files never to publish (``*.tmp``, ``cache/``); an exclude wins over
        an include. Excluded files are never opened; the archive or prefix (and manifest) hold exactly
        the published files; a filter that leaves nothing is an empty source (see ``allow_empty``).
    :param file_filter: the ordered form instead of ``include``/``exclude``: a
        :class:`~airflow_s3_publisher.filters.FileFilter` whose last matching rule decides.
    :param object_options: metadata, tags, content type, storage class, encryption and bucket owner of
        every object (:class:`~airflow_s3_publisher.options.ObjectOptions`).
    :param transfer: part size, concurrency, retries, timeouts, checksums and the request engine
        (:class:`~airflow_s3_publisher.options.TransferOptions`); ``None``: those of the client
        ``publish()`` is given, else the defaults.
    """

    #: The settings an operator renders with Jinja before publishing.
    TEMPLATED: ClassVar[tuple[str, ...]] = (
        "bucket",
        "key",
        "endpoint",
        "region",
        "compress",
        "publisher",
        "aws_conn_id",
    )

    publisher: str | Mapping[str, Any] | PublisherSpec | None = None
    bucket: str | None = None
    key: str | None = None
    endpoint: str | None = None
    region: str | None = None
    compress: bool | str | None = None
    aws_conn_id: str | None = "aws_default"
    compression_level: int | None = None
    manifest: bool = False
    allow_empty: bool = False
    include: Sequence[str] | str | None = None
    exclude: Sequence[str] | str | None = None
    file_filter: FileFilter | None = None
    object_options: ObjectOptions = field(default_factory=ObjectOptions)
    transfer: TransferOptions | None = None
    _rules: FileFilter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_static_settings(
            self.publisher,
            bucket=self.bucket,
            key=self.key,
            endpoint=self.endpoint,
            region=self.region,
            compress=self.compress,
        )
        check_compression_level(self.compression_level)
        for name in ("manifest", "allow_empty"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidSpecError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.file_filter is not None and (self.include is not None or self.exclude is not None):
            raise InvalidSpecError("pass include/exclude or file_filter, not both")
        rules = self.file_filter if self.file_filter is not None else FileFilter.from_lists(self.include, self.exclude)
        _check_type("file_filter", rules, FileFilter)
        object.__setattr__(self, "_rules", rules)  # compiled once; bad patterns fail here
        _check_type("object_options", self.object_options, ObjectOptions)
        if self.transfer is not None:
            _check_type("transfer", self.transfer, TransferOptions)

    @classmethod
    def build(cls, base: PublishSettings | None = None, /, **settings: Any) -> PublishSettings:
        """``base`` (default: all defaults) with ``settings`` applied on top.

        ``settings`` are named after this class's fields, or after :class:`ObjectOptions`' fields
        (``metadata=``, ``tags=``, ...), which go into ``object_options``. Unknown names are refused.
        """
        if "object_options" in settings and settings["object_options"] is None:
            del settings["object_options"]  # None: the default (or the base's)
        unknown = sorted(set(settings) - set(cls.field_names()) - set(_OBJECT_FIELDS))
        if unknown:
            raise InvalidSpecError(
                f"unknown publish setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"valid ones are {', '.join(cls.field_names() + _OBJECT_FIELDS)}"
            )
        objects = {name: settings.pop(name) for name in _OBJECT_FIELDS if name in settings}
        if objects:
            options = settings.get("object_options", base.object_options if base else ObjectOptions())
            _check_type("object_options", options, ObjectOptions)
            settings["object_options"] = dataclasses.replace(options, **_without_none(objects))
        if base is None:
            return cls(**settings)
        return dataclasses.replace(base, **settings) if settings else base

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the settings, in order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    @property
    def rules(self) -> FileFilter:
        """The include/exclude rules, compiled (no rule: every file is published)."""
        return self._rules

    @classmethod
    def accepts(cls, name: str) -> bool:
        """Whether :meth:`build` takes a setting called ``name``."""
        return name in cls.field_names() or name in _OBJECT_FIELDS

    def spec(self) -> PublisherSpec:
        """The complete publisher spec, every value checked (call once templated values are rendered)."""
        return build_publisher_spec(
            self.publisher,
            bucket=self.bucket,
            key=self.key,
            endpoint=self.endpoint,
            region=self.region,
            compress=self.compress,
        )


def _check_type(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise InvalidSpecError(f"{name} must be a {kind.__name__}, not {type(value).__name__}")


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    # metadata=None / tags=None mean "none", as the operators always accepted.
    return {name: {} if value is None and name in ("metadata", "tags") else value for name, value in values.items()}
