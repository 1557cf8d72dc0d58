"""Reading the command line's documents: RESULT (a PublishedResult) and SPEC/PUBLISHER (a publisher spec)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_s3_publisher.cli.common import InputError, one_line

if TYPE_CHECKING:
    from airflow_s3_publisher.result import PublishedResult

__all__ = ["load_document", "read_file", "read_publisher", "read_result", "read_stream"]


def read_result(argument: str) -> PublishedResult:
    """RESULT as a PublishedResult: a JSON file, ``-`` for stdin, or the JSON text itself."""
    from airflow_s3_publisher.result import PublishedResult

    if argument == "-":
        text, where = read_stream(sys.stdin, "stdin"), "stdin"
    elif argument.lstrip().startswith("{"):
        text, where = argument, "RESULT"
    else:
        text, where = read_file(Path(argument), "RESULT"), argument
    try:
        data: object = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{where} is not valid PublishedResult JSON: {err}") from None
    if not isinstance(data, Mapping):
        raise InputError(
            f"{where} holds a JSON {type(data).__name__}; expected a PublishedResult object such as "
            '{"Type": "s3", "Params": {"Bucket": ..., "Key": ...}}'
        )
    return PublishedResult.from_dict(data)


def read_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {str(path)!r} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} file {str(path)!r} is not UTF-8 text") from None
    except OSError as err:
        raise InputError(f"cannot read {what} file {str(path)!r}: {err.strerror or err}") from None


def read_stream(stream: IO[str], where: str) -> str:
    try:
        return stream.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {where}: {err}") from None


def read_publisher(argument: str) -> str | Mapping[str, Any]:
    """SPEC as ``build_publisher_spec`` takes it: the URI text, or the dict a JSON/YAML document holds."""
    text = argument.strip()
    if argument == "-":
        document = load_document(read_stream(sys.stdin, "stdin"), "stdin", suffix="")
    elif "://" in text or re.match(r"(?i)s3\s*(,|$)", text) or re.match(r"(?i)(target|dst|destination)=", text):
        return argument
    else:
        path = Path(argument)
        document = load_document(read_file(path, "SPEC"), str(path), suffix=path.suffix.lower())
    if isinstance(document, str):
        return document
    if isinstance(document, Mapping):
        # A Bacalhau job fragment such as {"Publisher": {"Type": "s3", "Params": {...}}} is unwrapped.
        if len(document) == 1:
            (name, inner), *_ = document.items()
            if str(name).strip().lower() == "publisher" and isinstance(inner, (Mapping, str)):
                return inner
        return document
    where = "stdin" if argument == "-" else repr(argument)
    raise InputError(
        f"SPEC {where} holds a {type(document).__name__}; expected a publisher dict such as "
        "{'Type': 's3', 'Params': {'Bucket': ..., 'Key': ...}} or an s3:// URI"
    )


def load_document(text: str, where: str, *, suffix: str) -> object:
    """Parse JSON (``.json``) or YAML (anything else; JSON is YAML too, and used if PyYAML is missing)."""
    if suffix != ".json":
        try:
            import importlib

            yaml: Any = importlib.import_module("yaml")
        except ImportError:
            yaml = None
        if yaml is not None:
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise InputError(f"{where} is not valid YAML: {one_line(str(err))}") from None
    try:
        loaded: object = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{where} is not valid JSON: {err}") from None
    return loaded
