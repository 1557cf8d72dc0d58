"""Publisher specs: Bacalhau's declarative dict and imperative URI forms, parsed and validated.

Pure logic: nothing here knows Airflow or boto3. A value that still holds Jinja (``{{`` or ``{%``) is
*templated*: it is kept as it is and validated only once Airflow has rendered it.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_s3_publisher.exceptions import InvalidSpecError
from airflow_s3_publisher.naming import validate_key_template

#: Param names accepted in the declarative form and as URI options (matched case-insensitively).
PARAM_NAMES: tuple[str, ...] = ("bucket", "key", "endpoint", "region", "compress", "encoding")
_TRUE = frozenset({"true"})
_FALSE = frozenset({"false"})
_ENCODINGS = {"gzip": True, "plain": False}
_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MISSING = {
    "bucket": "no bucket given: pass bucket='my-bucket', or a publisher such as 's3://my-bucket/results/'",
    "key": "no key given: pass key='results/{jobID}/', or a publisher such as 's3://my-bucket/results/{jobID}/'",
}
_BUCKET_RULES = (
    "S3 bucket names are 3-63 characters of lowercase letters, digits, '.' and '-', "
    "start and end with a letter or digit, and are not IP addresses"
)


def is_templated(value: object) -> bool:
    """Whether ``value`` is only known once Airflow renders it (Jinja text or a lazy XCom reference)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_templated(v) for v in value.values())
    # XComArg, PlainXComArg and friends are resolved at run time.
    return not (isinstance(value, (bool, int, float)) or value is None)


@dataclass(frozen=True, slots=True)
class PublisherSpec:
    """A complete, validated publisher spec. ``key`` is the template, not yet rendered."""

    bucket: str
    key: str
    endpoint: str = ""
    region: str = ""
    compress: bool = False

    def to_uri(self) -> str:
        """Format as Bacalhau's imperative form; :func:`parse_publisher` reads it back to an equal spec."""
        fields = [f"s3://{self.bucket}/{self.key}"]
        if self.endpoint:
            fields.append(f"opt=endpoint={self.endpoint}")
        if self.region:
            fields.append(f"opt=region={self.region}")
        fields.append(f"opt=compress={'true' if self.compress else 'false'}")
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(fields)
        return out.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """Format as Bacalhau's declarative form."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.endpoint:
            params["Endpoint"] = self.endpoint
        if self.region:
            params["Region"] = self.region
        params["Compress"] = self.compress
        return {"Type": "s3", "Params": params}


def parse_publisher(publisher: str | Mapping[str, Any] | PublisherSpec | None) -> dict[str, Any]:
    """Read the settings a publisher value gives, in either of Bacalhau's forms.

    Returns a dict with some of the keys ``bucket``, ``key``, ``endpoint``, ``region``, ``compress``
    (values not yet validated beyond their form). Unknown params or options are errors.
    """
    if publisher is None:
        return {}
    if isinstance(publisher, PublisherSpec):
        return {
            "bucket": publisher.bucket,
            "key": publisher.key,
            "endpoint": publisher.endpoint,
            "region": publisher.region,
            "compress": publisher.compress,
        }
    if isinstance(publisher, str):
        return _params_to_settings(_parse_uri(publisher), source=f"publisher {publisher!r}")
    if isinstance(publisher, Mapping):
        return _params_to_settings(_params_of_dict(publisher), source="publisher dict")
    raise InvalidSpecError(
        f"publisher must be an s3:// URI string, a {{'Type': 's3', 'Params': {{...}}}} dict or a "
        f"PublisherSpec, not {type(publisher).__name__}"
    )


def build_publisher_spec(
    publisher: str | Mapping[str, Any] | PublisherSpec | None = None,
    *,
    bucket: str | None = None,
    key: str | None = None,
    endpoint: str | None = None,
    region: str | None = None,
    compress: bool | str | None = None,
) -> PublisherSpec:
    """Merge ``publisher`` with explicit settings (explicit ones win) and validate the result."""
    settings = parse_publisher(publisher)
    for name, value in (
        ("bucket", bucket),
        ("key", key),
        ("endpoint", endpoint),
        ("region", region),
        ("compress", compress),
    ):
        if value is not None:
            settings[name] = value
    for name in ("bucket", "key"):
        if not settings.get(name):
            raise InvalidSpecError(_MISSING[name])
    return PublisherSpec(
        bucket=validate_bucket(_text(settings["bucket"], "bucket")),
        key=validate_key_template(_text(settings["key"], "key")),
        endpoint=validate_endpoint(_text(settings.get("endpoint") or "", "endpoint")),
        region=validate_region(_text(settings.get("region") or "", "region")),
        compress=parse_bool(settings.get("compress", False), "compress"),
    )


def check_static_settings(
    publisher: object,
    *,
    bucket: object = None,
    key: object = None,
    endpoint: object = None,
    region: object = None,
    compress: object = None,
) -> None:
    """Validate, at DAG parse time, every setting that is not templated.

    Templated values are skipped here; they are validated once rendered, before any upload.
    """
    explicit = {"bucket": bucket, "key": key, "endpoint": endpoint, "region": region, "compress": compress}
    if not is_templated(publisher) and not any(is_templated(v) for v in explicit.values()):
        build_publisher_spec(publisher, **explicit)  # type: ignore[arg-type]
        return
    settings: dict[str, Any] = {}
    publisher_known = not is_templated(publisher)
    if isinstance(publisher, Mapping):
        params = _params_of_dict(publisher)
        settings = _params_to_settings(
            {k: v for k, v in params.items() if not is_templated(v)}, source="publisher dict"
        )
        publisher_known = True
    settings.update({k: v for k, v in explicit.items() if v is not None})
    for name, value in settings.items():
        if not is_templated(value):
            _validate_setting(name, value)
    if publisher_known:
        given = settings.keys() | params_names(publisher)
        for name in ("bucket", "key"):
            if name not in given:
                raise InvalidSpecError(_MISSING[name])


def params_names(publisher: object) -> set[str]:
    """Lower-cased param names that a declarative ``publisher`` dict sets (templated or not)."""
    if not isinstance(publisher, Mapping):
        return set()
    return {str(k).strip().lower() for k, v in _params_of_dict(publisher).items() if v is not None}


def _validate_setting(name: str, value: object) -> None:
    if name == "bucket":
        validate_bucket(_text(value, name))
    elif name == "key":
        validate_key_template(_text(value, name))
    elif name == "endpoint":
        validate_endpoint(_text(value, name))
    elif name == "region":
        validate_region(_text(value, name))
    elif name == "compress":
        parse_bool(value, name)


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if S3 accepts it as a bucket name, else raise naming what is wrong."""
    problem = ""
    if not 3 <= len(bucket) <= 63:
        problem = f"it is {len(bucket)} characters long"
    elif not _BUCKET_CHARS.match(bucket):
        bad = sorted({c for c in bucket if not re.match(r"[a-z0-9.-]", c)})
        problem = f"it contains {', '.join(repr(c) for c in bad)}"
    elif not (bucket[0].isalnum() and bucket[-1].isalnum()):
        problem = "it does not start and end with a letter or digit"
    elif ".." in bucket:
        problem = "it contains '..'"
    elif _is_ip(bucket):
        problem = "it is formatted as an IP address"
    elif bucket.startswith(("xn--", "sthree-")) or bucket.endswith(("-s3alias", "--ol-s3")):
        problem = "it uses a prefix or suffix that S3 reserves"
    if problem:
        raise InvalidSpecError(f"invalid bucket name {bucket!r}: {problem}; {_BUCKET_RULES}")
    return bucket


def validate_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` (without a trailing ``/``) if it is an ``http(s)://host[:port]`` URL."""
    if not endpoint:
        return ""
    shown = redact_url(endpoint)
    valid = "expected a URL such as 'http://127.0.0.1:8333' or 'https://s3.us-west-2.amazonaws.com'"
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as err:
        raise InvalidSpecError(f"invalid endpoint {shown!r}: {err}; {valid}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidSpecError(f"invalid endpoint {shown!r}: the scheme must be http or https; {valid}")
    if parts.username is not None or parts.password is not None:
        raise InvalidSpecError(
            f"invalid endpoint {shown!r}: credentials must not be part of the endpoint URL; "
            "put them in the Airflow AWS connection or the environment"
        )
    if not parts.hostname:
        raise InvalidSpecError(f"invalid endpoint {shown!r}: it has no host; {valid}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidSpecError(
            f"invalid endpoint {shown!r}: it must not have a path, query or fragment "
            f"(the bucket and key are separate settings); {valid}"
        )
    if port == 0:
        raise InvalidSpecError(f"invalid endpoint {shown!r}: port 0; {valid}")
    return f"{parts.scheme}://{parts.netloc}"


def is_aws_endpoint(endpoint: str) -> bool:
    """Whether ``endpoint`` is AWS's own S3 (or empty: boto3's default), where virtual-hosted addressing is the norm."""
    host = urlsplit(endpoint).hostname or ""
    return not endpoint or host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def validate_region(region: str) -> str:
    """Return ``region`` if it looks like a region name (``us-east-1``, ``auto``...)."""
    if region and not _REGION.match(region):
        raise InvalidSpecError(
            f"invalid region {region!r}: expected letters, digits, '-', '_' or '.' such as 'us-east-1'"
        )
    return region


def parse_bool(value: object, name: str) -> bool:
    """Read a boolean option: ``True``/``False`` or the strings ``true``/``false`` in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise InvalidSpecError(f"invalid {name} value {value!r}: expected true or false")


def redact_url(url: str) -> str:
    """``url`` with any user:password part replaced by ``***``, safe for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value))
    return True


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidSpecError(f"invalid {name} {value!r}: expected a string, not {type(value).__name__}")
    return value


def _params_of_dict(publisher: Mapping[Any, Any]) -> dict[str, Any]:
    top = {str(k).strip().lower(): v for k, v in publisher.items()}
    if not set(top) <= {"type", "params"}:
        # A bare params dict ({"Bucket": ..., "Key": ...}) is accepted too.
        return dict(publisher)
    kind = top.get("type", "s3")
    if not isinstance(kind, str) or kind.strip().lower() != "s3":
        raise InvalidSpecError(f"invalid publisher type {kind!r}: expected 's3'")
    params = top.get("params")
    if not isinstance(params, Mapping):
        raise InvalidSpecError(
            f"invalid publisher params {params!r}: expected a dict such as {{'Bucket': 'b', 'Key': 'k'}}"
        )
    return dict(params)


def _params_to_settings(params: Mapping[Any, Any], *, source: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    encoding: Any = None
    for raw_name, value in params.items():
        name = str(raw_name).strip().lower()
        if name not in PARAM_NAMES:
            raise InvalidSpecError(
                f"unknown param or option {raw_name!r} in {source}; valid ones are "
                "Bucket, Key, Endpoint, Region, Compress and Encoding"
            )
        if value is None:
            continue
        if name == "encoding":
            encoding = value
        else:
            settings[name] = value
    if encoding is not None and not is_templated(encoding):
        # Newer Bacalhau spells compression Encoding: gzip|plain.
        compress = _ENCODINGS.get(encoding.strip().lower() if isinstance(encoding, str) else "")
        if compress is None:
            raise InvalidSpecError(f"invalid encoding {encoding!r} in {source}: expected 'gzip' or 'plain'")
        given = settings.get("compress")
        if given is not None and not is_templated(given) and parse_bool(given, "compress") != compress:
            raise InvalidSpecError(f"Compress={given!r} and Encoding={encoding!r} disagree in {source}")
        settings["compress"] = compress
    return settings


def _parse_uri(text: str) -> dict[str, Any]:
    """Parse ``s3://bucket/key,opt=k=v,option=k=v`` (or ``s3,opt=bucket=b,opt=key=k``) into params."""
    shown = redact_url(text)
    if not text.strip():
        raise InvalidSpecError("empty publisher: expected 's3://bucket/key[,opt=name=value...]'")
    try:
        rows = list(csv.reader([text], skipinitialspace=False))
    except csv.Error as err:
        raise InvalidSpecError(f"invalid publisher {shown!r}: {err}") from None
    fields = rows[0] if rows else []
    uri = ""
    options: dict[str, str] = {}
    for index, field in enumerate(fields):
        if "=" not in field or "://" in field.partition("=")[0]:
            if index == 0:
                uri = field
                continue
            raise InvalidSpecError(
                f"invalid publisher option {field!r} in {shown!r}: options are written opt=name=value"
            )
        flag, _, rest = field.partition("=")
        flag = flag.strip().lower()
        if flag in ("target", "dst", "destination"):
            uri = rest
        elif flag in ("opt", "option"):
            name, eq, value = rest.partition("=")
            if not eq or not name.strip():
                raise InvalidSpecError(f"invalid publisher option {field!r} in {shown!r}: expected opt=name=value")
            if name.strip().lower() not in PARAM_NAMES:
                raise InvalidSpecError(
                    f"unknown publisher option {name!r} in {shown!r}; valid options are "
                    "bucket, key, endpoint, region, compress and encoding"
                )
            options[name.strip().lower()] = value
        else:
            raise InvalidSpecError(
                f"invalid publisher option {field!r} in {shown!r}: expected opt=name=value or option=name=value"
            )
    uri = uri.strip()
    if len(uri) >= 2 and uri[0] == uri[-1] and uri[0] in "'\"":
        uri = uri[1:-1].strip()
    params: dict[str, Any] = {}
    scheme, sep, rest = uri.partition("://")
    if not sep:
        if uri.lower() != "s3":
            raise InvalidSpecError(f"invalid publisher {shown!r}: expected an s3:// URI such as 's3://bucket/key'")
    elif scheme.lower() != "s3":
        raise InvalidSpecError(f"unsupported publisher scheme {scheme!r} in {shown!r}: only s3:// is supported")
    else:
        bucket, _, key = rest.partition("/")
        if bucket:
            params["bucket"] = bucket
        key = key.lstrip("/")
        if key:
            params["key"] = key
    params.update(options)
    return params
