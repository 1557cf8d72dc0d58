"""Building the native engine's settings from the S3 client, and the reasons it must step aside.

Every setting obstore would otherwise read from an ``AWS_*`` variable is given explicitly; what cannot
be honoured (a replaced resolver, an unoverridable variable, a botocore setting, a CA bundle the native
TLS stack refuses, a process forked with obstore loaded) is named, and the engine is not used.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow_s3_publisher.s3.engine import EngineUnavailable

if TYPE_CHECKING:
    from botocore.config import Config

    from airflow_s3_publisher.options import TransferOptions

__all__ = [
    "DEFAULT_CONCURRENCY",
    "UNOVERRIDABLE_ENV",
    "bundle_problem",
    "client_options",
    "concurrency_for",
    "config_problem",
    "environment_problem",
    "forked_with_obstore",
    "host_compatible",
    "resolver_problem",
    "store_config",
]

#: Requests in flight at once unless :meth:`NativeEngine.create` is told otherwise: small requests are
#: latency-bound, so this is higher than TransferOptions.concurrency's default (see benchmarks/engine_probe.py).
DEFAULT_CONCURRENCY = 32
#: ``AWS_*`` variables obstore would apply and the engine cannot override with an explicit value.
UNOVERRIDABLE_ENV = (
    "AWS_SERVER_SIDE_ENCRYPTION",
    "AWS_SSE_KMS_KEY_ID",
    "AWS_SSE_BUCKET_KEY_ENABLED",
    "AWS_SSE_CUSTOMER_KEY_BASE64",
)
_DNS_LABELS = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9](\.[a-z0-9][a-z0-9-]*[a-z0-9])*$")


#: Set in a child process forked while obstore was loaded: obstore's runtime threads do not survive a
#: fork, and its calls would hang in the child.
_forked_with_obstore = False


def _after_fork_in_child() -> None:
    global _forked_with_obstore
    _forked_with_obstore = _forked_with_obstore or "obstore" in sys.modules


os.register_at_fork(after_in_child=_after_fork_in_child)


def forked_with_obstore() -> bool:
    """Whether this process was forked from one that had obstore loaded."""
    return _forked_with_obstore


def concurrency_for(options: TransferOptions) -> int:
    """Requests in flight: TransferOptions.concurrency's default (8, tuned for boto3) is raised to
    :data:`DEFAULT_CONCURRENCY`; a lower setting (e.g. 1: one object at a time) is kept as asked."""
    from airflow_s3_publisher.options import TransferOptions

    if options.concurrency < TransferOptions().concurrency:
        return options.concurrency
    return max(options.concurrency, DEFAULT_CONCURRENCY)


def resolver_problem() -> str | None:
    """Why Python's name resolution is not the system's here (obstore resolves names without Python).

    A replaced ``socket.getaddrinfo`` (gevent or eventlet monkey-patching, a test's fake names) would
    send the native engine elsewhere than boto3 for the same endpoint.
    """
    module = getattr(socket.getaddrinfo, "__module__", "")
    if module != "socket":
        return f"Python's name resolution is replaced (socket.getaddrinfo comes from {module or 'elsewhere'})"
    return None


def environment_problem(options: TransferOptions) -> str | None:
    """Why the environment holds an AWS_* setting obstore would apply and the engine cannot undo."""
    found = [name for name in UNOVERRIDABLE_ENV if os.environ.get(name)]
    if not options.checksums and os.environ.get("AWS_CHECKSUM_ALGORITHM"):
        found.append("AWS_CHECKSUM_ALGORITHM")
    if found:
        return f"{', '.join(found)} set in the environment would apply to every native request"
    return None


def config_problem(config: Config | None) -> str | None:
    """Why a botocore Config asks for something the engine cannot do."""
    if config is None:
        return None
    if getattr(config, "proxies", None):
        return "the connection's config sets proxies"
    if getattr(config, "client_cert", None):
        return "the connection's config sets a client certificate"
    if getattr(config, "use_fips_endpoint", None):
        return "the connection's config asks for FIPS endpoints"
    if getattr(config, "use_dualstack_endpoint", None):
        return "the connection's config asks for dual-stack endpoints"
    s3 = getattr(config, "s3", None) or {}
    for name in ("use_accelerate_endpoint", "use_dualstack_endpoint", "use_arn_region"):
        if s3.get(name):
            return f"the connection's config sets s3.{name}"
    return None


def client_options(scheme: str, verify: bool | str | None, options: TransferOptions) -> dict[str, Any]:
    """obstore's HTTP client options: passed whole, so none comes from the environment."""
    client: dict[str, Any] = {
        "allow_http": scheme == "http",
        "allow_invalid_certificates": verify is False,
        "connect_timeout": timedelta(seconds=options.connect_timeout),
        # Per read, like botocore's read_timeout; the whole request has no limit of its own (big GETs).
        "read_timeout": timedelta(seconds=options.read_timeout),
        "timeout": timedelta(days=1),
        "http1_only": True,
    }
    if isinstance(verify, str) and verify:
        try:
            client["root_certificate"] = Path(verify).read_bytes()
        except OSError as err:
            raise EngineUnavailable(f"cannot read the CA bundle {verify!r}: {err}") from err
    return client


def bundle_problem(bundle: str, host: str) -> str | None:
    """Why the native TLS stack would refuse ``host`` although boto3 (OpenSSL) accepts it.

    rustls refuses a server certificate that is itself a CA (``CaUsedAsEndEntity``): what
    ``openssl req -x509`` and MinIO's certgen make by default, and then put in the CA bundle as is.
    """
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(Path(bundle).read_bytes())
    except (OSError, ValueError) as err:
        return f"cannot read the CA bundle {bundle!r}: {err}"
    for certificate in certificates:
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            continue
        if not is_ca or certificate.issuer != certificate.subject:
            continue
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            patterns = [str(n) for n in names.get_values_for_type(x509.DNSName)]
            patterns += [str(n) for n in names.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            patterns = [str(a.value) for a in certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        if any(_host_matches(pattern, host) for pattern in patterns):
            return (
                f"the CA bundle's certificate for {host} is a self-signed CA certificate used as the server's own, "
                "which the native TLS stack (rustls) refuses"
            )
    return None


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host.count(".") == pattern.count(".")
    return pattern == host


def store_config(
    bucket: str, endpoint: str, *, region: str, virtual: bool, checksums: bool, sse: tuple[str, str]
) -> dict[str, Any]:
    """obstore's S3Store config: every setting it would otherwise take from an ``AWS_*`` variable, explicit.

    :param virtual: virtual-hosted addressing, where the bucket name can be a host name label.
    :param sse: ``(ServerSideEncryption, SSEKMSKeyId)``, empty strings for none.
    """
    virtual = virtual and host_compatible(bucket, endpoint)
    if virtual:
        parts = urlsplit(endpoint)
        endpoint = urlunsplit((parts.scheme, f"{bucket}.{parts.netloc}", parts.path, "", ""))
    config: dict[str, Any] = {
        "region": region,
        "endpoint": endpoint,
        "aws_endpoint_url_s3": endpoint,
        "virtual_hosted_style_request": virtual,
        # With the checksum on, it is the integrity check (obstore hashes the body once for it, and
        # the store refuses a mismatch with BadDigest); without it, the signed payload hash is.
        "unsigned_payload": checksums,
        "skip_signature": False,
        "s3_express": False,
        "request_payer": False,
        "disable_tagging": False,
    }
    if checksums:
        config["checksum_algorithm"] = "SHA256"
    if sse[0]:
        config["server_side_encryption"] = sse[0]
        if sse[1]:
            config["sse_kms_key_id"] = sse[1]
    return config


def host_compatible(bucket: str, endpoint: str) -> bool:
    """Whether ``bucket`` can be a host name label set (``<bucket>.<host>``), as botocore decides."""
    if not 3 <= len(bucket) <= 63 or not _DNS_LABELS.match(bucket) or re.fullmatch(r"[\d.]+", bucket):
        return False
    return "." not in bucket or not endpoint.startswith("https:")  # dotted names break TLS host checks
