"""Throttles for the token endpoints: login and refresh each have a bucket per address and one per user.

The address bucket slows one client trying many accounts; the user bucket slows many addresses
trying one account (for a refresh, the user the token names: only a token with a valid signature
counts, so nobody can spend another user's budget with a forged one). The rates are the settings
``API_LOGIN_ADDRESS_RATE``, ``API_LOGIN_USER_RATE``, ``API_REFRESH_ADDRESS_RATE`` and
``API_REFRESH_USER_RATE``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework_simplejwt.exceptions import TokenBackendError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.state import token_backend

from wedsync.client_address import request_client_address
from wedsync.models import ServiceAccountKey
from wedsync.services.throttles import auth_attempt_hit


class _AttemptThrottle(BaseThrottle):
    bucket: ClassVar[str]
    rate_setting: ClassVar[str]
    _wait: float | None = None

    def identity(self, request: Request) -> str | None:
        """Whose attempt this is, or None when the bucket does not apply."""
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        identity = self.identity(request)
        if identity is None:
            return True
        self._wait = auth_attempt_hit(bucket=self.bucket, identity=identity, rate=getattr(settings, self.rate_setting))
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


class _AddressThrottle(_AttemptThrottle):
    def identity(self, request: Request) -> str | None:
        return request_client_address(request._request) or "unknown"


def _body_field(request: Request, name: str) -> str | None:
    data = request.data
    value = data.get(name) if hasattr(data, "get") else None
    return value if isinstance(value, str) and value else None


class LoginAddressThrottle(_AddressThrottle):
    bucket = "login.address"
    rate_setting = "API_LOGIN_ADDRESS_RATE"


class RefreshAddressThrottle(_AddressThrottle):
    bucket = "refresh.address"
    rate_setting = "API_REFRESH_ADDRESS_RATE"


class LoginUserThrottle(_AttemptThrottle):
    bucket = "login.user"
    rate_setting = "API_LOGIN_USER_RATE"

    def identity(self, request: Request) -> str | None:
        return _body_field(request, "username")  # the name tried, whether or not it exists


class RefreshUserThrottle(_AttemptThrottle):
    bucket = "refresh.user"
    rate_setting = "API_REFRESH_USER_RATE"

    def identity(self, request: Request) -> str | None:
        raw = _body_field(request, "refresh")
        if raw is None:
            return None
        try:
            # Signature, expiry, audience and issuer; no database (the view checks the blacklist).
            claims = token_backend.decode(raw, verify=True)  # type: ignore[arg-type]  # it takes the raw string
        except TokenBackendError:
            return None
        user_id = claims.get(jwt_settings.USER_ID_CLAIM)
        return None if user_id is None else str(user_id)


class ApiKeyRateThrottle(BaseThrottle):
    """Requests per API key (``API_KEY_RATE``), counted across nodes; people's requests pass."""

    _wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ServiceAccountKey):
            return True
        self._wait = auth_attempt_hit(bucket="api_key", identity=key.prefix, rate=settings.API_KEY_RATE)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
