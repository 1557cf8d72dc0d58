"""The "Recipes per store" of docs/stores.md, each exercised with its connection extra against a real S3 server.

Every recipe is an Airflow AWS connection (``AIRFLOW_CONN_<ID>`` JSON, read through the amazon
provider's S3Hook) whose ``extra`` is the one docs/stores.md gives, with only the host and port made local:

- ``aws``: ``{"region_name": "eu-west-1"}`` and no endpoint anywhere, so botocore goes to AWS's own
  ``https://<bucket>.s3.eu-west-1.amazonaws.com``; that name and port 443 lead (in this process only) to
  moto (tools/stores.py) behind TLS with a certificate the test trusts (``AWS_CA_BUNDLE``); moto routes
  virtual-hosted requests as AWS does (it checks neither signatures nor checksum values);
- ``minio``: ``{"endpoint_url": "http://minio.localhost:<port>", "region_name": "us-east-1"}``: the session's
  SeaweedFS, by a host name as a MinIO endpoint is (no MinIO-compatible server installs from the registries);
- ``seaweedfs``: ``{"endpoint_url": "http://127.0.0.1:<port>", "region_name": "us-east-1"}``;
- ``r2``: ``{"endpoint_url": ..., "region_name": "auto"}``: the session's SeaweedFS, which checks SigV4
  signatures made for region "auto";
- ``gcs``: ``{"endpoint_url": ..., "region_name": "auto"}`` with ``TransferOptions(checksums=False)``:
  SeaweedFS behind tests/storeproxy.py refusing every ``x-amz-checksum-*`` header (400 InvalidArgument);
- ``virtual-host``: ``{"endpoint_url": "http://vhost.localhost:<port>", "region_name": "us-east-1",
  "config_kwargs": {"s3": {"addressing_style": "virtual"}}}``: a SeaweedFS serving ``<bucket>.vhost.localhost``
  behind tests/storeproxy.py refusing path-style requests (403 SecondLevelDomainForbidden).

For each: a plain file, a plain directory (with manifest) and a compressed directory are published and
fetched back, bytes and ChecksumSHA256 checked; a versioned bucket gives each publish its own VersionID,
and fetch serves the pinned one. Every request's URL is checked for the recipe's addressing style and
every signature for the recipe's region. Then the quirks the table promises: what a store refusing
checksum headers answers to a default publish (and to a default fetch), multipart uploads with
``checksums=False``, path-style refused by a virtual-host-only store, and a pre-signed URL for region
"auto" from the CLI.

Host names: ``*.localhost`` does not resolve on every machine (glibc without nss-myhostname does not),
so for these tests the resolver maps ``localhost``, ``*.localhost`` and ``*.amazonaws.com`` to 127.0.0.1
(RFC 6761 reserves ``.localhost`` for loopback), and ``*.amazonaws.com:443`` to the AWS stand-in's port;
nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

import airflow_s3_publisher.fetching as fetch_module
import airflow_s3_publisher.publishing as publish_module
from airflow_s3_publisher import PublishedResult, fetch, publish
from airflow_s3_publisher.exceptions import PublishError, S3PublisherError, S3RequestError
from airflow_s3_publisher.manifest import MANIFEST_NAME
from airflow_s3_publisher.options import MiB, TransferOptions
from tests.storeproxy import StoreProxy, refuse_checksum_headers, self_signed_tls, virtual_host_only
from tests.support import SAMPLE_FILES, CliRun, make_tree, read_tree, run_cli_in_process, sha256_b64
from tools.seaweed import ADMIN, SeaweedServer
from tools.stores import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, MotoServer, moto_available, virtual_host_seaweed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_s3_publisher.s3 import S3Client as PublisherClient

pytestmark = pytest.mark.timeout(120)

AWS_REGION = "eu-west-1"
VHOST_DOMAIN = "vhost.localhost"
NO_CHECKSUMS = TransferOptions(checksums=False)
#: Multipart from 5 MiB on, so that a few MiB exercise CreateMultipartUpload / UploadPart / Complete.
SMALL_PARTS = TransferOptions(part_size=5 * MiB, multipart_threshold=5 * MiB, concurrency=4)
RECIPES = ["aws", "minio", "seaweedfs", "r2", "gcs", "virtual-host"]


# ------------------------------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 server (AWS semantics); the tests needing it skip, saying why, when moto is missing."""
    missing = moto_available()
    if missing:
        pytest.skip(missing)
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def vhost_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A second SeaweedFS that also routes ``<bucket>.vhost.localhost`` (and verifies those signatures)."""
    with virtual_host_seaweed(tmp_path_factory.mktemp("seaweed-vhost"), [ADMIN], VHOST_DOMAIN) as server:
        yield server


@pytest.fixture(scope="module")
def gcs_proxy(seaweed: SeaweedServer) -> Iterator[StoreProxy]:
    """The session's SeaweedFS as a store refusing flexible-checksum headers (GCS's XML API, B2)."""
    with StoreProxy(seaweed.endpoint, refuse_checksum_headers) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def vhost_proxy(vhost_seaweed: SeaweedServer) -> Iterator[StoreProxy]:
    """``vhost_seaweed`` as a virtual-host-only store: a path-style request gets 403."""
    with StoreProxy(vhost_seaweed.endpoint, virtual_host_only(VHOST_DOMAIN)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def aws_front(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreProxy, Path]]:
    """moto behind TLS with a certificate for ``s3.eu-west-1.amazonaws.com`` and ``*.`` of it: where
    AWS's own endpoint is. Also gives the certificate file, for ``AWS_CA_BUNDLE``."""
    tls, cert = self_signed_tls(
        [f"s3.{AWS_REGION}.amazonaws.com", f"*.s3.{AWS_REGION}.amazonaws.com"], tmp_path_factory.mktemp("aws-tls")
    )
    with StoreProxy(moto.endpoint, lambda request: None, tls=tls) as proxy:
        yield proxy, cert


@pytest.fixture(autouse=True)
def loopback_names(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Resolve ``localhost``, ``*.localhost`` and ``*.amazonaws.com`` to 127.0.0.1 in this process.

    Returns a port map for ``*.amazonaws.com`` (port -> loopback port; e.g. 443 -> the AWS stand-in).
    """
    real = socket.getaddrinfo
    amazon_ports: dict[int, int] = {}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str):
            name = host.lower().rstrip(".")
            if name.endswith(".amazonaws.com"):
                host = "127.0.0.1"
                number = 443 if port in ("https", b"https", None) else int(port)
                port = amazon_ports.get(number, number)
            elif name == "localhost" or name.endswith(".localhost"):
                host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return amazon_ports


# ------------------------------------------------------------------------------------------ recipes


@dataclass
class Buckets:
    """The buckets of a module: (server, versioned) -> name, and a client to delete each with."""

    names: dict[tuple[str, bool], str] = field(default_factory=dict)
    admins: dict[str, S3Client] = field(default_factory=dict)


@pytest.fixture(scope="module")
def buckets() -> Iterator[Buckets]:
    made = Buckets()
    yield made
    for name, admin in made.admins.items():  # a non-empty SeaweedFS bucket holds a volume slot: free it
        with contextlib.suppress(BotoCoreError, ClientError):
            admin.delete_bucket(Bucket=name)


@dataclass
class Store:
    """One recipe: the Airflow connection that carries it and the server behind it."""

    name: str
    conn_id: str
    extra: dict[str, Any]
    region: str
    endpoint: str
    """What the PublishedResult's Endpoint must be."""
    admin: S3Client
    """Straight to the server behind the recipe (no proxy), to make buckets and read what was stored."""
    make_bucket: Callable[[str, bool], None]
    server: str
    """Which server holds the buckets (recipes on one server share its two buckets)."""
    virtual_host: str = ""
    """``host:port`` that ``<bucket>.`` is put in front of, for virtual-hosted recipes."""
    transfer: TransferOptions | None = None
    proxy: StoreProxy | None = None
    shared: Buckets = field(default_factory=lambda: Buckets())
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    """Every key of one test starts with it: the buckets are shared by the tests of a module."""

    def bucket(self, *, versioned: bool = False) -> str:
        """The server's bucket for this module (created on first use: a first write to a new SeaweedFS
        bucket waits for a volume, 0.2 s per concurrent request)."""
        name = self.shared.names.get((self.server, versioned))
        if name is None:
            name = f"st-{uuid.uuid4().hex[:8]}"
            self.make_bucket(name, versioned)
            self.shared.names[self.server, versioned] = name
            if self.server == "seaweedfs":  # the session's server; moto and the vhost one stop with the module
                self.shared.admins[name] = self.admin
        return name

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def url_prefix(self, bucket: str) -> str:
        """How every request URL for ``bucket`` must start (the recipe's addressing style)."""
        if self.virtual_host:
            scheme = self.endpoint.split(":", 1)[0]
            return f"{scheme}://{bucket}.{self.virtual_host}/"
        return f"{self.endpoint}/{bucket}"


def define_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, login: str, password: str, extra: Any) -> str:
    """An Airflow AWS connection in the environment, in its JSON form."""
    connection = {"conn_type": "aws", "login": login, "password": password, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id


@pytest.fixture
def recipe(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Store]:
    """Makes the recipe of that name: its connection defined, its server running."""
    return lambda name: _make_store(name, request, monkeypatch)


@pytest.fixture(params=RECIPES)
def store(request: pytest.FixtureRequest, recipe: Callable[[str], Store]) -> Store:
    """Each recipe of the table in docs/stores.md in turn."""
    return recipe(request.param)


def _make_store(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Store:
    conn_id = f"recipe_{name.replace('-', '_')}"
    shared: Buckets = request.getfixturevalue("buckets")
    if name == "aws":
        # Exactly AWS's recipe: no endpoint anywhere, so botocore goes to
        # https://<bucket>.s3.eu-west-1.amazonaws.com; that name (port 443) leads to moto behind TLS.
        moto: MotoServer = request.getfixturevalue("moto")
        front, cert = request.getfixturevalue("aws_front")
        request.getfixturevalue("loopback_names")[443] = front.port
        for variable in [v for v in os.environ if v.startswith("AWS_")]:
            monkeypatch.delenv(variable)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        extra: dict[str, Any] = {"region_name": AWS_REGION}
        define_connection(monkeypatch, conn_id, MOTO_ACCESS_KEY, MOTO_SECRET_KEY, extra)
        return Store(
            name,
            conn_id,
            extra,
            AWS_REGION,
            f"https://s3.{AWS_REGION}.amazonaws.com",
            moto.client(AWS_REGION),
            lambda bucket, versioned: moto.create_bucket(bucket, region=AWS_REGION, versioned=versioned),
            "moto",
            virtual_host=f"s3.{AWS_REGION}.amazonaws.com",
            proxy=front,
            shared=shared,
        )
    if name == "virtual-host":
        server: SeaweedServer = request.getfixturevalue("vhost_seaweed")
        proxy: StoreProxy = request.getfixturevalue("vhost_proxy")
        endpoint = f"http://{VHOST_DOMAIN}:{proxy.port}"
        extra = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "config_kwargs": {"s3": {"addressing_style": "virtual"}},
        }
        define_connection(monkeypatch, conn_id, ADMIN.access_key, ADMIN.secret_key, extra)
        return Store(
            name,
            conn_id,
            extra,
            "us-east-1",
            endpoint,
            server.client(),
            server.create_bucket,
            "seaweedfs-vhost",
            virtual_host=f"{VHOST_DOMAIN}:{proxy.port}",
            proxy=proxy,
            shared=shared,
        )
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    transfer = None
    proxy_used = None
    if name == "minio":
        endpoint, region = f"http://minio.localhost:{seaweed.s3_port}", "us-east-1"
    elif name == "seaweedfs":
        endpoint, region = seaweed.endpoint, "us-east-1"
    elif name == "r2":
        endpoint, region = seaweed.endpoint, "auto"
    else:
        assert name == "gcs"
        proxy_used = request.getfixturevalue("gcs_proxy")
        endpoint, region, transfer = proxy_used.endpoint, "auto", NO_CHECKSUMS
    extra = {"endpoint_url": endpoint, "region_name": region}
    define_connection(monkeypatch, conn_id, ADMIN.access_key, ADMIN.secret_key, extra)
    return Store(
        name,
        conn_id,
        extra,
        region,
        endpoint,
        seaweed.client(),
        seaweed.create_bucket,
        "seaweedfs",
        transfer=transfer,
        proxy=proxy_used,
        shared=shared,
    )


@dataclass
class Sent:
    """The URL and the SigV4 credential scope of one request that publish() or fetch() sent."""

    url: str
    scope: str


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Every request that publish() and fetch() send, as it leaves botocore.

    It wraps the ``connect`` that publish() and fetch() call, rather than passing them a client: building
    the client from the connection (and, in fetch, from the result's endpoint) is what is tested here.
    """
    seen: list[Sent] = []

    def record(request: Any, **_: Any) -> None:
        auth = request.headers.get("Authorization", b"")
        auth = auth.decode() if isinstance(auth, bytes) else str(auth)
        match = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request", auth)
        seen.append(Sent(request.url, match.group(1) if match else ""))

    for module in (publish_module, fetch_module):
        real = module.connect

        def recording(*args: Any, _real: Callable[..., PublisherClient] = real, **kwargs: Any) -> PublisherClient:
            client = _real(*args, **kwargs)
            client.raw.meta.events.register("before-send.s3", record)
            return client

        monkeypatch.setattr(module, "connect", recording)
    return seen


def assert_recipe_requests(store: Store, bucket: str, sent: list[Sent]) -> None:
    """Every request used the recipe's addressing style and was signed for the recipe's region."""
    assert sent
    prefix = store.url_prefix(bucket)
    assert [s.url for s in sent if not s.url.startswith(prefix)] == []
    assert {s.scope for s in sent} == {store.region}


def stored_bytes(store: Store, bucket: str, key: str, version_id: str = "") -> bytes:
    args: dict[str, Any] = {"VersionId": version_id} if version_id else {}
    return store.admin.get_object(Bucket=bucket, Key=key, **args)["Body"].read()


# ------------------------------------------------------------------------------------------ each recipe


def test_connection_extra_reaches_the_s3hook_and_the_client(store: Store) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_s3_publisher.s3 import connect

    hook = S3Hook(aws_conn_id=store.conn_id)
    assert hook.conn_config.region_name == store.region
    assert hook.conn_config.endpoint_url == store.extra.get("endpoint_url")
    client = connect(store.conn_id, options=store.transfer)
    assert (client.endpoint, client.region) == (store.endpoint, store.region)
    wanted_style = store.extra.get("config_kwargs", {}).get("s3", {}).get("addressing_style")
    if "endpoint_url" in store.extra:  # a custom endpoint: path-style unless the extra says otherwise
        assert client.raw.meta.config.s3 is not None
        assert client.raw.meta.config.s3["addressing_style"] == (wanted_style or "path")
    else:  # AWS: botocore's own choice (virtual-hosted for DNS-compatible bucket names)
        assert (client.raw.meta.config.s3 or {}).get("addressing_style") in (None, "auto")


def test_plain_file(store: Store, tmp_path: Path, sent: list[Sent]) -> None:
    bucket = store.bucket()
    source = make_tree(tmp_path / "out", SAMPLE_FILES) / "outputs" / "result.csv"
    key = store.key("runs/one")
    result = publish(source, bucket=bucket, key=key, aws_conn_id=store.conn_id, transfer=store.transfer)
    assert result == PublishedResult(bucket, f"{key}/", store.region, store.endpoint, "", "")
    assert stored_bytes(store, bucket, f"{key}/result.csv") == SAMPLE_FILES["outputs/result.csv"]
    dest = fetch(result, tmp_path / "back", aws_conn_id=store.conn_id, transfer=store.transfer)
    assert read_tree(dest) == {"result.csv": SAMPLE_FILES["outputs/result.csv"]}
    assert_recipe_requests(store, bucket, sent)


def test_plain_directory_with_manifest(store: Store, tmp_path: Path, sent: list[Sent]) -> None:
    bucket = store.bucket()
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    result = publish(
        source, bucket=bucket, key=store.key("dir"), manifest=True, aws_conn_id=store.conn_id, transfer=store.transfer
    )
    assert (result.key, result.region, result.endpoint, result.version_id) == (
        store.key("dir/"),
        store.region,
        store.endpoint,
        "",
    )
    for rel, data in SAMPLE_FILES.items():
        assert stored_bytes(store, bucket, result.key + rel) == data
    assert result.checksum_sha256 == sha256_b64(stored_bytes(store, bucket, result.key + MANIFEST_NAME))
    dest = fetch(result, tmp_path / "back", aws_conn_id=store.conn_id, transfer=store.transfer)
    assert read_tree(dest) == SAMPLE_FILES
    assert_recipe_requests(store, bucket, sent)


def test_compressed_directory(store: Store, tmp_path: Path, sent: list[Sent]) -> None:
    bucket = store.bucket()
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    result = publish(
        source, bucket=bucket, key=store.key("arch"), compress=True, aws_conn_id=store.conn_id, transfer=store.transfer
    )
    assert (result.key, result.region, result.endpoint, result.version_id) == (
        store.key("arch.tar.gz"),
        store.region,
        store.endpoint,
        "",
    )
    assert result.checksum_sha256 == sha256_b64(stored_bytes(store, bucket, result.key))
    dest = fetch(result, tmp_path / "back", aws_conn_id=store.conn_id, transfer=store.transfer)
    assert read_tree(dest) == SAMPLE_FILES
    assert_recipe_requests(store, bucket, sent)


def test_versioned_bucket_pins_each_publish(store: Store, tmp_path: Path, sent: list[Sent]) -> None:
    bucket = store.bucket(versioned=True)
    results = []
    for text in (b"first\n", b"second\n"):
        source = make_tree(tmp_path / text.decode().strip(), {"out.txt": text})
        results.append(
            publish(
                source,
                bucket=bucket,
                key=store.key("same"),
                compress=True,
                aws_conn_id=store.conn_id,
                transfer=store.transfer,
            )
        )
    first, second = results
    assert first.version_id
    assert second.version_id
    assert first.version_id != second.version_id
    for result in results:
        assert result.checksum_sha256 == sha256_b64(stored_bytes(store, bucket, result.key, result.version_id))
    # The key now holds "second"; the first result still fetches (and verifies) its own version.
    dest = fetch(first, tmp_path / "back", aws_conn_id=store.conn_id, transfer=store.transfer)
    assert read_tree(dest) == {"out.txt": b"first\n"}
    assert_recipe_requests(store, bucket, sent)


# ------------------------------------------------------------------------------------------ GCS: no checksum headers


def test_gcs_default_publish_fails_naming_the_refused_header(recipe: Callable[[str], Store], tmp_path: Path) -> None:
    store = recipe("gcs")
    bucket = store.bucket()
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    assert store.proxy is not None
    store.proxy.clear()
    with pytest.raises(PublishError) as raised:
        publish(source, bucket=bucket, key=store.key("arch"), compress=True, aws_conn_id=store.conn_id)
    message = str(raised.value)
    assert "nothing was published to s3://" in message
    assert "PutObject" in message
    assert "InvalidArgument (HTTP 400)" in message
    assert "Unsupported header 'x-amz-checksum-sha256'" in message
    assert "the store refuses checksum headers: publish and fetch with transfer=TransferOptions(checksums=False)" in (
        message
    )
    assert isinstance(raised.value.__cause__, S3RequestError)
    assert store.proxy.refused()
    assert all(s.refusal is not None for s in store.proxy.requests())
    assert store.admin.list_objects_v2(Bucket=bucket, Prefix=store.prefix).get("KeyCount") == 0


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_gcs_multipart_publish_with_checksums_off(
    recipe: Callable[[str], Store], tmp_path: Path, compress: bool
) -> None:
    store = recipe("gcs")
    bucket = store.bucket()
    big = os.urandom(11 * MiB + 17)
    source = make_tree(tmp_path / "out", {"big.bin": big, "small.txt": b"small\n"})
    assert store.proxy is not None
    store.proxy.clear()
    options = TransferOptions(part_size=5 * MiB, multipart_threshold=5 * MiB, concurrency=4, checksums=False)
    result = publish(
        source, bucket=bucket, key=store.key("mp"), compress=compress, manifest=not compress, aws_conn_id=store.conn_id,
        transfer=options,
    )  # fmt: skip
    operations = [(s.method, sorted(s.query)) for s in store.proxy.requests()]
    assert ("POST", ["uploads"]) in operations  # CreateMultipartUpload
    assert sum(1 for method, query in operations if method == "PUT" and "partNumber" in query) == 3
    assert ("POST", ["uploadId"]) in operations  # CompleteMultipartUpload
    assert store.proxy.refused() == []
    if compress:
        assert result.checksum_sha256 == sha256_b64(stored_bytes(store, bucket, result.key))
    else:
        assert stored_bytes(store, bucket, result.key + "big.bin") == big
        assert result.checksum_sha256 == sha256_b64(stored_bytes(store, bucket, result.key + MANIFEST_NAME))
    dest = fetch(result, tmp_path / "back", aws_conn_id=store.conn_id, transfer=NO_CHECKSUMS)
    files = read_tree(dest)
    assert files == {"big.bin": big, "small.txt": b"small\n"}
    assert hashlib.sha256(files["big.bin"]).digest() == hashlib.sha256(big).digest()


def test_gcs_default_fetch_is_refused_too(
    recipe: Callable[[str], Store], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A default fetch asks for the stored checksum (``x-amz-checksum-mode: ENABLED``): such a store
    refuses that header as well, so a fetch needs ``transfer=TransferOptions(checksums=False)`` too."""
    store = recipe("gcs")
    bucket = store.bucket()
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    result = publish(
        source, bucket=bucket, key=store.key("arch"), compress=True, aws_conn_id=store.conn_id, transfer=NO_CHECKSUMS
    )
    assert store.proxy is not None
    store.proxy.clear()
    with pytest.raises(S3PublisherError, match=r"GetObject .*InvalidArgument .*'x-amz-checksum-mode'"):
        fetch(result, tmp_path / "back", aws_conn_id=store.conn_id)
    assert not (tmp_path / "back").exists()
    dest = fetch(result, tmp_path / "back", aws_conn_id=store.conn_id, transfer=NO_CHECKSUMS)
    assert read_tree(dest) == SAMPLE_FILES

    # The CLI likewise: `get` is refused with the way out in its one error line; --no-checksums works.
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result.to_dict()))

    def get(*flags: str) -> CliRun:
        return run_cli_in_process(
            capsys, "get", str(path), "-o", str(tmp_path / "cli"), "--aws-conn-id", store.conn_id, *flags
        )

    refused = get()
    assert refused.returncode == 4, refused.stderr
    assert "--no-checksums" in refused.stderr
    assert not (tmp_path / "cli").exists()
    fetched = get("--no-checksums")
    assert fetched.returncode == 0, fetched.stderr
    assert read_tree(tmp_path / "cli") == SAMPLE_FILES


# ------------------------------------------------------------------------------------------ virtual-host only


def test_virtual_host_only_store_refuses_the_default_path_style(
    recipe: Callable[[str], Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without ``config_kwargs.s3.addressing_style = virtual`` a custom endpoint is addressed path-style,
    which such a store refuses; the recipe's extra (the ``virtual-host`` store above) is what works."""
    store = recipe("virtual-host")
    bucket = store.bucket()
    conn_id = define_connection(
        monkeypatch,
        "recipe_vhost_path_style",
        ADMIN.access_key,
        ADMIN.secret_key,
        {"endpoint_url": store.endpoint, "region_name": "us-east-1"},
    )
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    with pytest.raises(PublishError) as raised:
        publish(source, bucket=bucket, key=store.key("arch"), compress=True, aws_conn_id=conn_id)
    assert "PutObject" in str(raised.value)
    assert "SecondLevelDomainForbidden (HTTP 403)" in str(raised.value)
    assert "lack s3:PutObject" not in str(raised.value)  # the store said why; no guessed permission
    assert store.admin.list_objects_v2(Bucket=bucket, Prefix=store.prefix).get("KeyCount") == 0
    assert store.proxy is not None
    assert {s.host for s in store.proxy.refused()} == {VHOST_DOMAIN}


# ------------------------------------------------------------------------------------------ R2: region "auto"


def test_r2_region_auto_presign_from_the_cli(
    recipe: Callable[[str], Store], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = recipe("r2")
    bucket = store.bucket(versioned=True)
    source = make_tree(tmp_path / "out", SAMPLE_FILES)
    result = publish(source, bucket=bucket, key=store.key("shared"), compress=True, aws_conn_id=store.conn_id)
    assert result.region == "auto"
    assert result.version_id
    store.admin.put_object(Bucket=bucket, Key=result.key, Body=b"overwritten later")
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result.to_dict()))
    proc = run_cli_in_process(capsys, "presign", str(path), "--expires", "300", "--aws-conn-id", store.conn_id)
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip()
    assert url.startswith(f"{store.endpoint}/{bucket}/{store.prefix}/shared.tar.gz?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert re.search(r"X-Amz-Credential=[^&]*%2Fauto%2Fs3%2Faws4_request", url), url
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own loopback server
        body = response.read()
    assert sha256_b64(body) == result.checksum_sha256
    # The signature covers the region: the same URL signed for "auto" is refused for another one.
    forged = url.replace("%2Fauto%2F", "%2Fus-east-1%2F")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=30)  # noqa: S310 - loopback
    assert refused.value.code == 403
