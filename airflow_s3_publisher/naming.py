"""Object keys: Bacalhau's placeholders, the suffix rules and S3's key constraints.

Pure logic: the Airflow context is read by duck typing, so nothing here imports Airflow.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_s3_publisher.exceptions import InvalidSpecError

ARCHIVE_SUFFIX = ".tar.gz"
MAX_KEY_BYTES = 1024

#: Placeholder name -> what it is replaced with (the README's table is built from the same facts).
PLACEHOLDERS: dict[str, str] = {
    "jobID": "the DAG run, unique across DAGs: <dag_id>__<run_id>, run_id sanitised",
    "executionID": "this task try's own id (Airflow 3 gives every try a new ti.id)",
    "date": "UTC date at publish time, YYYYMMDD",
    "time": "UTC time at publish time, HHMMSS (same clock reading as {date})",
    "nodeID": "the worker's host name",
    "dagID": "the DAG id",
    "taskID": "the task id",
    "runID": "the run id, each character outside [A-Za-z0-9._-] replaced by '-'",
    "mapIndex": "the map index of a mapped task, -1 when not mapped",
    "tryNumber": "the try number, 1 for the first try",
}
#: Placeholders that need nothing from the Airflow run.
CONTEXT_FREE = frozenset({"date", "time", "nodeID"})

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNSAFE_RUN_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def sanitize_run_id(run_id: str) -> str:
    """``run_id`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    return _UNSAFE_RUN_ID_CHARS.sub("-", run_id)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the placeholders are made of. Fields an environment lacks stay ``None``."""

    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    execution_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> RunInfo:
        """Read the run from an Airflow task context (works for runs with or without a logical date)."""
        if not context:
            return cls()
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None)
        dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None)
        if dag_id is None and context.get("dag") is not None:
            dag_id = getattr(context["dag"], "dag_id", None)
        task_id = getattr(ti, "task_id", None)
        if task_id is None and context.get("task") is not None:
            task_id = getattr(context["task"], "task_id", None)
        ti_id = getattr(ti, "id", None)
        map_index = getattr(ti, "map_index", None)
        try_number = getattr(ti, "try_number", None)
        return cls(
            dag_id=str(dag_id) if dag_id is not None else None,
            task_id=str(task_id) if task_id is not None else None,
            run_id=str(run_id) if run_id is not None else None,
            execution_id=str(ti_id) if ti_id is not None else None,
            map_index=int(map_index) if map_index is not None else None,
            try_number=int(try_number) if try_number is not None else None,
        )

    def values(self, now: datetime, node_id: str) -> dict[str, str | None]:
        """Every placeholder's value; ``None`` where this run does not know it."""
        run_id = sanitize_run_id(self.run_id) if self.run_id is not None else None
        job_id = f"{self.dag_id}__{run_id}" if self.dag_id is not None and run_id is not None else None
        utc = now.astimezone(UTC)
        return {
            "jobID": job_id,
            "executionID": self.execution_id,
            "date": utc.strftime("%Y%m%d"),
            "time": utc.strftime("%H%M%S"),
            "nodeID": node_id,
            "dagID": self.dag_id,
            "taskID": self.task_id,
            "runID": run_id,
            "mapIndex": str(self.map_index) if self.map_index is not None else None,
            "tryNumber": str(self.try_number) if self.try_number is not None else None,
        }


def placeholders_in(template: str) -> list[str]:
    """Names of the ``{placeholders}`` in ``template``, in order."""
    return _PLACEHOLDER.findall(template)


def validate_key_template(template: str) -> str:
    """Check a key template before rendering: known placeholders only, and no fixed part S3 rejects."""
    if not template:
        raise InvalidSpecError("empty key: expected an object key or prefix such as 'results/{jobID}/'")
    for name in placeholders_in(template):
        if name not in PLACEHOLDERS:
            raise InvalidSpecError(_unknown_placeholder(name, template))
    _check_key_text(template, template)
    _check_segments(template, template)
    fixed = len(_PLACEHOLDER.sub("", template).encode("utf-8", "surrogatepass"))
    if fixed > MAX_KEY_BYTES:
        raise InvalidSpecError(
            f"key template {template[:60]!r}... is {fixed} bytes before its placeholders are filled in; "
            f"S3 allows at most {MAX_KEY_BYTES} bytes"
        )
    return template


def apply_suffix(template: str, compress: bool) -> str:
    """Bacalhau's suffix rules: archives end with ``.tar.gz``, plain prefixes with ``/``."""
    if compress:
        return template if template.endswith(ARCHIVE_SUFFIX) else template + ARCHIVE_SUFFIX
    return template if template.endswith("/") else template + "/"


def render_key(
    template: str,
    *,
    compress: bool,
    run: RunInfo | None = None,
    now: datetime | None = None,
    node_id: str | None = None,
) -> str:
    """Render a key template: suffix rule first (as Bacalhau does), then the placeholders.

    ``{date}`` and ``{time}`` come from one reading of the UTC clock (``now``, default: now).
    A placeholder the run cannot supply is an error naming it, never a literal left in the key.
    """
    validate_key_template(template)
    values = (run or RunInfo()).values(now or datetime.now(UTC), node_id or socket.gethostname())

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values[name]
        if value is None:
            raise InvalidSpecError(
                f"placeholder {{{name}}} in key {template!r} needs the Airflow run context, which is not "
                f"available here; only {{date}}, {{time}} and {{nodeID}} work without it "
                "(pass context= to publish(), or use the operator)"
            )
        return value

    key = _PLACEHOLDER.sub(substitute, apply_suffix(template, compress))
    return validate_key(key)


def validate_key(key: str) -> str:
    """Return ``key`` if S3 and a later download can use it as an object key or prefix."""
    if not key:
        raise InvalidSpecError("empty key: expected an object key or prefix such as 'results/run-1/'")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidSpecError(
            f"key {key[:60]!r}... is {size} bytes once rendered; S3 allows at most {MAX_KEY_BYTES} bytes"
        )
    _check_key_text(key, key)
    _check_segments(key, key)
    return key


def _check_segments(text: str, shown: str) -> None:
    for segment in text.split("/"):
        if segment in (".", ".."):
            raise InvalidSpecError(
                f"invalid key {shown!r}: it has a {segment!r} segment, which downloads cannot map to a "
                "path; use plain names between the '/'"
            )


def _check_key_text(text: str, shown: str) -> None:
    if text.startswith("/"):
        raise InvalidSpecError(f"invalid key {shown!r}: it must not start with '/'; write 'results/...'")
    control = _CONTROL.search(text)
    if control:
        raise InvalidSpecError(
            f"invalid key {shown!r}: it contains the control character {control.group()!r}; keys must be printable text"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSpecError(f"invalid key {shown!r}: it is not valid UTF-8 text") from None


def _unknown_placeholder(name: str, template: str) -> str:
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    near = [p for p in PLACEHOLDERS if p.lower() == name.lower()]
    hint = f" Did you mean {{{near[0]}}}?" if near else ""
    return f"unknown placeholder {{{name}}} in key {template!r}; known placeholders are {known}.{hint}"
