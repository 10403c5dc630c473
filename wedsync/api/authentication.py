from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from realtime.limits.addresses import api_address_check
from wedsync.services.audit import AuditAction, ClientInfo, audit_refusal_record
from wedsync.services.auth import TokenRefused, access_token_verify
from wedsync.services.service_accounts import ApiKeyRefused, api_key_verify

if TYPE_CHECKING:  # rest_framework.views imports the authentication classes of the settings
    from rest_framework.views import APIView


def unauthenticated_request_admit(request: Request) -> None:
    """Count a request without valid credentials against its address's API_UNAUTHENTICATED_RATE;
    past it, :class:`Throttled` (429 with ``retry_after``, audited by the exception handler)."""
    decision = api_address_check(client=ClientInfo.from_request(request))
    if not decision.allowed:
        raise Throttled(wait=decision.retry_after)


def _credential_refused(
    request: Request, refused: TokenRefused | ApiKeyRefused, *, details: dict[str, str] | None = None
) -> AuthenticationFailed:
    """Audit a refused token or key (aggregated per address when it names nobody, which also counts
    against the address's budget: decision 0025); the 401 to raise."""
    if refused.user is None:
        unauthenticated_request_admit(request)
    audit_refusal_record(
        action=AuditAction.API_AUTH_REFUSE,
        reason=refused.reason,
        actor=refused.user,
        target=request.path[:200],
        client=ClientInfo.from_request(request),
        details=details,
    )
    return AuthenticationFailed(refused.message, code="unauthorized")


class ApiKeyAuthentication(BaseAuthentication):
    """A service account's key (decision 0030): ``Authorization: Api-Key <key>``, or ``Bearer <key>``
    for clients that only speak bearer. A key has one dot (``<prefix>.<secret>``), a JWT two, so a
    JWT is left to :class:`RevocableJWTAuthentication`. ``request.user`` is the account's user and
    ``request.auth`` the key; refusals are audited like a bad token's."""

    def authenticate(self, request: Request) -> tuple[object, object] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2:
            return None
        keyword, raw_bytes = parts[0].lower(), parts[1]
        if keyword != b"api-key" and not (keyword == b"bearer" and raw_bytes.count(b".") == 1):
            return None
        try:
            key = api_key_verify(raw=raw_bytes.decode("ascii"))
        except (ApiKeyRefused, UnicodeDecodeError) as exc:
            refused = (
                exc if isinstance(exc, ApiKeyRefused) else ApiKeyRefused(reason="malformed", message="Malformed key.")
            )
            raise _credential_refused(request, refused, details={"method": "api_key"}) from None
        return key.service_account.user, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="wedsync"'


class RevocableJWTAuthentication(BaseAuthentication):
    """``Authorization: Bearer <access token>``, refusing revoked tokens, with every refusal audited
    (aggregated per address when the token names nobody: decision 0025)."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[object, str] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        try:
            if len(parts) != 2:
                raise TokenRefused(reason="malformed", message="Expected 'Authorization: Bearer <token>'.")
            raw = parts[1].decode("ascii")
            return access_token_verify(raw=raw), raw
        except (TokenRefused, UnicodeDecodeError) as exc:
            refused = (
                exc if isinstance(exc, TokenRefused) else TokenRefused(reason="malformed", message="Malformed token.")
            )
            raise _credential_refused(request, refused) from None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="wedsync"'


class UnauthenticatedAddressCap(BaseAuthentication):
    """Last in the list, so DRF reaches it only for requests no authenticator accepted: counts them
    against their address's budget and answers 429 past it. It authenticates nobody. (A throttle
    would come too late: DRF answers a missing login with 401 before any throttle runs.)"""

    def authenticate(self, request: Request) -> None:
        unauthenticated_request_admit(request)


class UnauthenticatedAddressThrottle(BaseThrottle):
    """The same budget for views that take no credentials at all (logging in, refreshing)."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        decision = api_address_check(client=ClientInfo.from_request(request))
        self._wait = None if decision.allowed else decision.retry_after
        return decision.allowed

    def wait(self) -> float | None:
        return self._wait
