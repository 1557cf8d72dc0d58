"""Planning a publish: the rendered key, what goes where, every check that can be made before any upload.

Pure logic: reads the local source's metadata (never its content) and knows nothing of S3 or Airflow.
``publish()`` plans, then transfers; the CLI's ``render`` uses :func:`resolve_target` alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_s3_publisher.exceptions import SourceError
from airflow_s3_publisher.manifest import MANIFEST_NAME
from airflow_s3_publisher.naming import RunInfo, render_key, validate_key
from airflow_s3_publisher.sources import SourceEntry, collect_source

if TYPE_CHECKING:
    from airflow_s3_publisher.settings import PublishSettings
    from airflow_s3_publisher.spec import PublisherSpec

__all__ = ["PublishPlan", "Target", "plan_publish", "resolve_target"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a publish goes: the complete spec and the rendered object key (or prefix)."""

    spec: PublisherSpec
    key: str

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.spec.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class PublishPlan:
    """A checked publish, ready to transfer.

    :param source: the local file or directory, as given.
    :param target: the spec and rendered key.
    :param entries: everything listed below the source (directories included, for archives).
    :param objects: for a plain publish, each object key and the file it holds; empty when compressed.
    :param manifest_key: for a plain publish with a manifest, the manifest's key.
    """

    source: str
    target: Target
    entries: list[SourceEntry]
    objects: Mapping[str, SourceEntry]
    manifest_key: str | None

    @property
    def files(self) -> list[SourceEntry]:
        """The regular files among :attr:`entries`."""
        return [entry for entry in self.entries if not entry.is_dir]

    @property
    def total_bytes(self) -> int:
        """Bytes of every file to publish."""
        return sum(entry.size for entry in self.entries)


def resolve_target(settings: PublishSettings, run: RunInfo, now: datetime, node_id: str | None = None) -> Target:
    """The complete spec (every value checked) and the key it renders to for ``run`` at ``now``."""
    spec = settings.spec()
    return Target(spec, render_key(spec.key, compress=spec.compress, run=run, now=now, node_id=node_id))


def plan_publish(source: str | os.PathLike[str], settings: PublishSettings, target: Target) -> PublishPlan:
    """List ``source`` and map it onto ``target``, refusing what could not be published or fetched back.

    :raises SourceError: a bad source, an empty one (unless ``allow_empty``), or a file named like the
        manifest when a manifest is asked for.
    :raises InvalidSpecError: an object key S3 would refuse.
    """
    shown = os.fspath(source)
    rules = settings.rules
    entries = collect_source(source, rules)
    if not settings.allow_empty and not any(not entry.is_dir for entry in entries):
        filtered = f" that passes the filters {rules.describe()}" if rules.active else ""
        raise SourceError(
            f"source {shown!r} has no file to publish{filtered}; pass allow_empty=True to publish an empty "
            "result anyway"
        )
    if target.spec.compress:
        return PublishPlan(shown, target, entries, {}, None)
    single = Path(source).is_file()
    objects: dict[str, SourceEntry] = {}
    for entry in entries:
        if entry.is_dir:
            continue
        name = Path(entry.relpath).name if single else entry.relpath
        if settings.manifest and name == MANIFEST_NAME:
            raise SourceError(
                f"{entry.path} has the manifest's name {MANIFEST_NAME!r}; rename it or publish without manifest"
            )
        objects[validate_key(target.key + name)] = entry
    manifest_key = validate_key(target.key + MANIFEST_NAME) if settings.manifest else None
    return PublishPlan(shown, target, entries, objects, manifest_key)
