"""The native request engine: one PutObject or GetObject per small object, through obstore (Rust).

botocore spends about 5 ms of CPU per request on this kind of machine (its serialisation, signing and
event pipeline, not the network), which caps a plain publish of many small files far below what the
store can take. This engine sends the same requests through obstore (the Rust ``object_store`` crate
and ``reqwest``), keeping a bounded number in flight from a few worker threads (obstore's synchronous
calls release the GIL). It is used only for the single-PUT objects of a plain publish and the GETs of
a prefix fetch; multipart uploads, listings and everything else stay on boto3.

What it guarantees (each checked by tests/test_native_engine.py against a real SeaweedFS):

* **Settings from the Airflow connection only.** Endpoint, region, addressing style and TLS
  verification are the ones :func:`~airflow_s3_publisher.s3.client.connect` resolved from the
  connection (the :class:`S3Client` given to :meth:`NativeEngine.create`).
  Credentials are read from the boto3 session's credential provider on every refresh
  (``get_frozen_credentials()``, cached at most :data:`CREDENTIAL_TTL` and never past the credentials'
  own expiry), so assumed roles keep working past their expiry; no key is ever copied into the store.
* **No stray ``AWS_*`` variables.** obstore's ``S3Store`` starts from every ``AWS_*`` variable it
  knows. The engine sets each setting it can explicitly (bucket, region, ``AWS_ENDPOINT_URL``,
  ``AWS_ENDPOINT_URL_S3``, addressing style, payload signing, ``AWS_SKIP_SIGNATURE``,
  ``AWS_S3_EXPRESS``, ``AWS_REQUEST_PAYER``, ``AWS_DISABLE_TAGGING``, ``AWS_CHECKSUM_ALGORITHM`` when
  checksums are on), replaces the HTTP client options as a whole (so ``AWS_ALLOW_HTTP``,
  ``AWS_ALLOW_INVALID_CERTIFICATES``, ``AWS_PROXY_URL``... are ignored), and passes a credential
  provider (so ``AWS_ACCESS_KEY_ID``, ``AWS_SESSION_TOKEN``, ``AWS_ROLE_ARN``, web identity, container
  and instance metadata settings are never consulted). Variables it cannot override
  (:data:`UNOVERRIDABLE_ENV`) make :meth:`create` refuse with :class:`EngineUnavailable`.
* **PutObject only:** one PUT per object, no HEAD, no multipart; ``x-amz-checksum-sha256`` on every
  PUT unless ``TransferOptions(checksums=False)``, and the store checks it (a mismatch: ``BadDigest``);
  the payload hash is signed only when there is no checksum (then no checksum header at all is sent),
  so the body is hashed once either way. Metadata, tags, content type, storage class, SSE/KMS and
  the expected bucket owner (a signed header) are sent; :meth:`NativeEngine.unsupported` names any
  other argument, and such a transfer belongs on the boto3 path. The rare key obstore cannot address
  (``a//b``, a trailing ``/``: :meth:`NativeEngine.unsupported_key`) goes through the client's boto3
  path, said once in the log.
* **Retries in Python:** obstore's own retries are off; each failed attempt that will be retried is
  logged (``S3 PutObject attempt 1 of 5 failed (HTTP 503 SlowDown); retrying with backoff``), with
  ``max_attempts``, ``connect_timeout`` and ``read_timeout`` from :class:`TransferOptions`.
* **Errors** become :class:`S3RequestError` (operation, bucket, key, code, status, request id; the same
  hints as the boto3 path; never credentials; obstore's error kept as ``__cause__``).
* **Never breaks a publish:** obstore is imported only in :meth:`NativeEngine.create`; a missing or
  broken wheel, a store that cannot be built, TLS the native stack would refuse (a self-signed CA
  certificate serving as the server's own), or a process forked from one that had obstore loaded
  (obstore's runtime threads do not survive a fork: its calls would hang) raises
  :class:`~airflow_s3_publisher.s3.engine.EngineUnavailable`, and
  :func:`~airflow_s3_publisher.s3.engine.select_engine` falls back to boto3, saying why.

Name resolution and proxies: reqwest resolves host names with the system resolver, not Python's
``socket.getaddrinfo`` (so the engine steps aside where that is replaced: gevent, eventlet, tests that
fake names), and honours ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` as botocore does.

"""

from __future__ import annotations

from airflow_s3_publisher.s3.native.engine import NativeEngine
from airflow_s3_publisher.s3.native.requests import GET_ARGS, PUT_ARGS
from airflow_s3_publisher.s3.native.setup import DEFAULT_CONCURRENCY

__all__ = ["DEFAULT_CONCURRENCY", "GET_ARGS", "PUT_ARGS", "NativeEngine"]
