"""The results a DAG run published, read through the public REST API (``/api/v2``) of an Airflow api-server.

A task that published returned a PublishedResult, so Airflow holds it as the task's ``return_value``
XCom (one per map index for a mapped task): as a dict when an operator or ``@task.s3_publish``
returned it, as its JSON text when ``airflow-s3-publisher publish`` printed it in a BashOperator.
:meth:`AirflowApi.published_results` lists the run's ``return_value`` XComs, reads each, and keeps
those that are PublishedResults (``{"Type": "s3", "Params": {...}}``).

Authentication: a bearer token, or a user name and password exchanged for one at the api-server's
``POST /auth/token`` (the simple and the FAB auth managers both serve it). Neither ever appears in an
error message; response bodies of the token endpoint are never shown.

Works with Airflow 3.1 and later (the ``/api/v2`` routes used here are the same in 3.1 and 3.3).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_s3_publisher.exceptions import InvalidSpecError, S3PublisherError
from airflow_s3_publisher.result import PublishedResult

if TYPE_CHECKING:
    import httpx

#: XCom key of a task's return value.
RETURN_VALUE = "return_value"
#: Entries per page: Airflow's default ``[api] maximum_page_limit``.
PAGE_SIZE = 100
DEFAULT_TIMEOUT = 30.0
_DETAIL_CHARS = 200


class AirflowApiError(S3PublisherError):
    """The api-server could not answer the question (the subclasses say why)."""


class ApiUnreachableError(AirflowApiError):
    """No HTTP answer from the api-server: refused connection, unknown host, TLS failure, timeout."""


class ApiAuthError(AirflowApiError):
    """The api-server refused the token or the user name and password (HTTP 401), or this user may not
    read the DAG's runs and XComs (HTTP 403)."""


class RunNotFoundError(AirflowApiError):
    """The api-server knows no such DAG, or the DAG has no such run."""


class NoPublishedResultError(AirflowApiError):
    """The run exists but none of its tasks (that match the filters) returned a PublishedResult."""


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """How to authenticate: a token, or a user name and password (exchanged for a token), or neither
    (for an api-server that lets anyone read)."""

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token and (self.username or self.password):
            raise InvalidSpecError("give the api-server a token or a user name and password, not both")
        if bool(self.username) != bool(self.password) and not self.token:
            missing = "password" if self.username else "user name"
            raise InvalidSpecError(f"a user name and a password go together: the {missing} is missing")

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be shown."""
        return tuple(value for value in (self.token, self.password) if value)


@dataclass(frozen=True, slots=True)
class RunResult:
    """A PublishedResult that one task (map index) of a run returned."""

    task_id: str
    map_index: int
    """-1 for a task that is not mapped."""
    result: PublishedResult

    @property
    def label(self) -> str:
        """``task`` or ``task[3]``."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


def api_base_url(url: str) -> str:
    """The api-server's base URL from what a user typed (``http://host:8080``, with or without ``/api/v2``).

    :raises InvalidSpecError: not an http(s) URL, or one with a user name or password in it.
    """
    text = url.strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSpecError(
            f"invalid api-server URL {_safe_url(text)!r}: expected http(s)://HOST[:PORT][/PATH], such as "
            "http://localhost:8080 (Airflow's [api] base_url)"
        )
    if parts.username or parts.password:
        raise InvalidSpecError(
            f"the api-server URL {_safe_url(text)!r} carries credentials; pass them as a token or a user "
            "name and password instead"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/api/v2"):
        path = path[: -len("/api/v2")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _safe_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return url


class AirflowApi:
    """A client of an Airflow api-server's public REST API, limited to what finding published results needs.

    :param base_url: the api-server's address, e.g. ``http://localhost:8080`` (see :func:`api_base_url`).
    :param credentials: a token, or a user name and password.
    :param timeout: seconds to wait for a connection and for each answer.
    :param transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        base_url: str,
        credentials: ApiCredentials,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        self.base_url = api_base_url(base_url)
        self._credentials = credentials
        self._token = credentials.token
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # ------------------------------------------------------------------ the question

    def published_results(
        self, dag_id: str, run_id: str, *, task_id: str | None = None, map_index: int | None = None
    ) -> list[RunResult]:
        """The PublishedResults the run's tasks returned, by task id and map index.

        :param dag_id: the DAG.
        :param run_id: the run, e.g. ``manual__2026-01-01T00:00:00+00:00``.
        :param task_id: only this task's results.
        :param map_index: only this map index (``-1``: only tasks that are not mapped).
        :raises RunNotFoundError: no such DAG, or no such run of it.
        :raises NoPublishedResultError: the run (narrowed by ``task_id``/``map_index``) published nothing.
        :raises ApiAuthError: the credentials were refused, or do not allow reading the run.
        :raises ApiUnreachableError: no answer from the api-server.
        :raises AirflowApiError: any other error answer.
        """
        self._check_run(dag_id, run_id)
        run_path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        entries: list[tuple[str, int]] = []
        offset = 0
        while True:
            params: dict[str, str | int] = {"xcom_key": RETURN_VALUE, "limit": PAGE_SIZE, "offset": offset}
            if map_index is not None:
                params["map_index"] = map_index
            page = self._get(f"{run_path}/{_q(task_id) if task_id else '~'}/xcomEntries", params)
            items = page.get("xcom_entries") or []
            entries += [(str(item["task_id"]), int(item["map_index"])) for item in items]
            offset += len(items)
            if not items or offset >= int(page.get("total_entries", 0)):
                break
        found: list[RunResult] = []
        for entry_task, entry_index in sorted(set(entries)):
            answer = self._get(
                f"{run_path}/{_q(entry_task)}/xcomEntries/{RETURN_VALUE}",
                {"map_index": entry_index, "deserialize": "false", "stringify": "false"},
            )
            result = as_published_result(answer.get("value"))
            if result is not None:
                found.append(RunResult(entry_task, entry_index, result))
        if not found:
            narrowed = ""
            if task_id is not None:
                narrowed += f" task {task_id!r}"
            if map_index is not None:
                narrowed += f" map index {map_index}"
            what = f"{narrowed.strip()} of run" if narrowed else "run"
            if not entries:
                looked = "no return value"
            elif len(entries) == 1:
                looked = "1 return value, not a PublishedResult"
            else:
                looked = f"{len(entries)} return values, none a PublishedResult"
            raise NoPublishedResultError(
                f"{what} {run_id!r} of DAG {dag_id!r} published no result ({looked}); a task publishes by "
                "returning one (S3PublishOperator, @task.s3_publish, or 'airflow-s3-publisher publish' "
                "in a BashOperator)"
            )
        return found

    def _check_run(self, dag_id: str, run_id: str) -> None:
        try:
            self._get(f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")
            return
        except _NotFound:
            pass
        try:
            self._get(f"/api/v2/dags/{_q(dag_id)}")
        except _NotFound:
            raise RunNotFoundError(f"the api-server at {self.base_url} knows no DAG {dag_id!r}") from None
        try:
            recent = self._get(f"/api/v2/dags/{_q(dag_id)}/dagRuns", {"order_by": "-run_after", "limit": 3})
            names = [str(run["dag_run_id"]) for run in recent.get("dag_runs", [])]
        except AirflowApiError:
            names = []
        hint = f"; its latest runs: {', '.join(names)}" if names else "; it has no runs"
        raise RunNotFoundError(f"DAG {dag_id!r} has no run {run_id!r}{hint}")

    # ------------------------------------------------------------------ HTTP

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        import httpx

        for attempt in (1, 2):
            token = self._ensure_token()
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                response = self._client.get(path, params=params, headers=headers)
            except httpx.HTTPError as err:
                raise self._unreachable(err) from None
            if response.status_code == 401 and attempt == 1 and self._credentials.username:
                self._token = None  # an expired token from the password: get a new one, once
                continue
            return self._json(response, f"GET {path}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_token(self) -> str | None:
        if self._token or not self._credentials.username:
            return self._token
        import httpx

        body = {"username": self._credentials.username, "password": self._credentials.password}
        try:
            response = self._client.post("/auth/token", json=body)
        except httpx.HTTPError as err:
            raise self._unreachable(err) from None
        status = response.status_code
        if status in (401, 403):
            raise ApiAuthError(
                f"the api-server at {self.base_url} refused the user name and password of "
                f"{self._credentials.username!r} (HTTP {status})"
            )
        if status == 404 or status == 405:
            raise AirflowApiError(
                f"the api-server at {self.base_url} has no POST /auth/token (HTTP {status}): its auth manager does "
                "not hand out tokens for a user name and password; pass a token instead"
            )
        if status >= 400:
            # The body may echo what was sent (a 422 does): never show it.
            raise AirflowApiError(f"the api-server at {self.base_url} answered POST /auth/token with HTTP {status}")
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            raise AirflowApiError(
                f"the api-server at {self.base_url} answered POST /auth/token without an access_token"
            ) from None
        if not isinstance(token, str) or not token:
            raise AirflowApiError(f"the api-server at {self.base_url} answered POST /auth/token with an empty token")
        self._token = token
        return token

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        status = response.status_code
        detail = self._detail(response)
        if status == 401 and not self._token:
            raise ApiAuthError(
                f"the api-server at {self.base_url} requires credentials (HTTP 401{detail}): give a token, or a "
                "user name and password"
            )
        # Airflow answers 401 for an expired token and 403 "Invalid JWT token" for one it cannot verify.
        if status == 401 or (status == 403 and "invalid jwt" in detail.lower()):
            how = f"the token of user {self._credentials.username!r}" if self._credentials.username else "the token"
            raise ApiAuthError(f"the api-server at {self.base_url} refused {how} (HTTP {status}{detail})")
        if status == 403:
            raise ApiAuthError(
                f"the api-server at {self.base_url} does not let these credentials {urllib.parse.unquote(what)} "
                f"(HTTP 403{detail}); the user needs read access to the DAG, its runs and XComs"
            )
        if status == 404:
            raise _NotFound(what)
        if status >= 400:
            raise AirflowApiError(
                f"the api-server at {self.base_url} answered {urllib.parse.unquote(what)} with HTTP {status}{detail}"
            )
        try:
            data = response.json()
        except ValueError:
            raise AirflowApiError(
                f"the api-server at {self.base_url} answered {what} with something other than JSON "
                f"(Content-Type {response.headers.get('content-type', 'none')!r}); is this Airflow's api-server?"
            ) from None
        if not isinstance(data, dict):
            raise AirflowApiError(
                f"the api-server at {self.base_url} answered {what} with a JSON {type(data).__name__}"
            )
        return data

    def _detail(self, response: httpx.Response) -> str:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            return ""
        if not isinstance(detail, str):
            return ""
        return ": " + self._scrub(" ".join(detail.split())[:_DETAIL_CHARS])

    def _unreachable(self, err: Exception) -> ApiUnreachableError:
        reason = self._scrub(" ".join(str(err).split())) or type(err).__name__
        return ApiUnreachableError(f"cannot reach the Airflow api-server at {self.base_url}: {reason}")

    def _scrub(self, text: str) -> str:
        for secret in (*self._credentials.secrets(), self._token or ""):
            if secret:
                text = text.replace(secret, "***")
        return text


class _NotFound(Exception):
    """HTTP 404 (turned into RunNotFoundError with a precise message by the caller)."""


def as_published_result(value: object) -> PublishedResult | None:
    """``value`` (an XCom's value: a dict, or the JSON text of one) as a PublishedResult, or ``None``.

    Only the full form ``{"Type": "s3", "Params": {...}}`` counts (a bare params dict could be any
    task's return value). A value that has that form but does not validate is ``None`` too.
    """
    for _ in range(2):  # a JSON text, at most once more encoded
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, Mapping):
        return None
    top = {str(k).lower(): v for k, v in value.items()}
    if set(top) != {"type", "params"} or str(top["type"]).strip().lower() != "s3":
        return None
    try:
        return PublishedResult.from_dict(value)
    except InvalidSpecError:
        return None


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
