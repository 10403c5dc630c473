from __future__ import annotations

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from wedsync.models import AuditOutcome
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.auth import TokenRefused, access_token_verify


class RevocableJWTAuthentication(BaseAuthentication):
    """``Authorization: Bearer <access token>``, refusing revoked tokens, with every refusal audited."""

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
            audit_record(
                action=AuditAction.API_AUTH_REFUSE,
                outcome=AuditOutcome.REFUSED,
                actor=refused.user,
                target=request.path[:200],
                client=ClientInfo.from_request(request),
                details={"reason": refused.reason},
            )
            raise AuthenticationFailed(refused.message, code="unauthorized") from None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="wedsync"'
