"""The native engine's credentials: the Airflow connection's boto3 session, asked afresh on every refresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["CREDENTIAL_REFRESH_MARGIN", "CREDENTIAL_TTL", "CredentialBridge"]

#: The longest the engine keeps one answer of the session's credential provider.
CREDENTIAL_TTL = timedelta(minutes=5)
#: obstore asks again this long before the credentials it holds expire.
CREDENTIAL_REFRESH_MARGIN = timedelta(seconds=60)


class CredentialBridge:
    """obstore's ``credential_provider``: the boto3 session's credentials, asked afresh on every refresh.

    obstore keeps an answer until ``refresh_threshold`` before its ``expires_at``, which is the
    credentials' own expiry (botocore refreshable credentials) or :data:`CREDENTIAL_TTL` from now,
    whichever comes first; each refresh calls ``get_frozen_credentials()``, which lets botocore
    refresh assumed-role credentials on its own schedule. The last error is kept for error messages.
    """

    refresh_threshold = CREDENTIAL_REFRESH_MARGIN

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials
        self.error: BaseException | None = None

    def __call__(self) -> dict[str, Any]:
        try:
            frozen = self._credentials.get_frozen_credentials()
        except Exception as err:
            self.error = err
            raise
        if not frozen.access_key or not frozen.secret_key:
            self.error = RuntimeError("the session's credentials have no access key or secret key")
            raise self.error
        self.error = None
        expires = datetime.now(UTC) + CREDENTIAL_TTL
        own = getattr(self._credentials, "_expiry_time", None)  # botocore RefreshableCredentials
        if isinstance(own, datetime) and own.tzinfo is not None:
            expires = min(expires, own.astimezone(UTC))  # obstore takes only datetime.UTC (not dateutil's)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token or None,
            "expires_at": expires,
        }

    def __repr__(self) -> str:  # obstore may show its provider in errors: never the keys
        return "<credentials of the connection's boto3 session>"
