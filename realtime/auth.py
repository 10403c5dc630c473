"""Authenticating a socket (PROTOCOL.md section 2): Origin first, then bearer, ticket or session.

A foreign Origin is refused whatever the credentials (cross-site WebSocket hijacking): an Origin
must be exactly one of ``CSRF_TRUSTED_ORIGINS`` or the same origin as the Host the socket came to,
and ``null`` is never accepted. Cookies count only with an allowed Origin present, since a browser
always sends one. Every outcome is audited with the method, the reason, the address and the agent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import jwt
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import User
from django.http.request import split_domain_port, validate_host

from realtime.services.tickets import TicketRefused, ticket_consume
from wedsync.models import AuditLog, AuditOutcome
from wedsync.selectors import token_generation_current
from wedsync.services.audit import (
    AuditAction,
    ClientInfo,
    audit_entry_build,
    audit_record,
    audit_refusal_record,
)
from wedsync.services.auth import TokenRefused, access_token_grant, access_token_verify

PROTOCOL_NAME = "wedsync.v1"
BEARER_PREFIX = "bearer."

Method = Literal["bearer", "ticket", "session"]


class SocketRefused(Exception):
    """The socket may not stay: ``close_code`` is 4401 (credentials) or 4403 (origin). ``user`` is
    whom a genuine but unusable credential names (revoked, deactivated), else None."""

    def __init__(self, *, close_code: int, reason: str, message: str, user: User | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.reason = reason
        self.message = message
        self.user = user


@dataclass(frozen=True, slots=True)
class SocketIdentity:
    user_id: int
    user_name: str
    method: Method
    generation: int
    expires_at: float | None  # bearer tokens only: when the socket must have refreshed by


def origin_allowed(origin: str, *, host: str | None, secure: bool) -> bool:
    """Exactly a trusted origin, or the same origin as an allowed Host: same scheme as the socket's
    own (``secure``: it came over TLS), and a scheme the deployment trusts at all, so ``http://``
    is foreign wherever only ``https://`` origins are trusted. No suffix or ``null`` tricks."""
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        return False
    if parts.scheme != ("https" if secure else "http"):
        return False
    if not any(trusted.startswith(f"{parts.scheme}://") for trusted in settings.CSRF_TRUSTED_ORIGINS):
        return False
    if host is None or parts.netloc.lower() != host.lower():
        return False
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def connection_secure(*, scheme: str, headers: dict[str, str]) -> bool:
    """Whether the client's connection is TLS: ``wss`` at this server, or, behind proxies we trust
    (``TRUSTED_PROXIES``), an ``X-Forwarded-Proto`` of ``https`` (its leftmost value, as Django reads it)."""
    if scheme in ("wss", "https"):
        return True
    forwarded = headers.get("x-forwarded-proto", "") if settings.TRUSTED_PROXIES else ""
    return forwarded.split(",", 1)[0].strip().lower() == "https"


def _session_user(cookie_header: str) -> User | None:
    try:
        cookies = SimpleCookie(cookie_header)
    except CookieError:
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=morsel.value)

    class _SessionOnly:  # get_user() needs only .session; it also checks the session's auth hash
        session = store

    user = get_user(_SessionOnly())  # type: ignore[arg-type]
    return user if isinstance(user, User) and user.is_active else None


def _authenticate(
    *, headers: dict[str, str], subprotocols: list[str], query: dict[str, list[str]]
) -> tuple[Method, User, int | None, float | None]:
    """(method, user, token generation if already read, expiry) or :class:`SocketRefused`."""
    bearer = [item[len(BEARER_PREFIX) :] for item in subprotocols if item.startswith(BEARER_PREFIX)]
    if bearer:
        if PROTOCOL_NAME not in subprotocols:
            raise SocketRefused(close_code=4401, reason="protocol_missing", message=f"Offer {PROTOCOL_NAME} too.")
        try:
            grant = access_token_grant(raw=bearer[0])
        except TokenRefused as exc:
            raise SocketRefused(close_code=4401, reason=exc.reason, message=exc.message, user=exc.user) from None
        return "bearer", grant.user, grant.generation, grant.expires_at
    tickets = query.get("ticket")
    if tickets:
        try:
            return "ticket", ticket_consume(raw=tickets[0]), None, None
        except TicketRefused as exc:
            raise SocketRefused(close_code=4401, reason=f"ticket_{exc.reason}", message=exc.message) from None
    if "cookie" in headers:
        if "origin" not in headers:  # only browsers send cookies, and browsers always send Origin
            raise SocketRefused(close_code=4403, reason="origin_missing", message="Cookies need an Origin.")
        session_user = _session_user(headers["cookie"])
        if session_user is not None:
            return "session", session_user, None, None
    raise SocketRefused(close_code=4401, reason="no_credentials", message="Log in first: token, ticket or session.")


def socket_identify(
    *, headers: dict[str, str], subprotocols: list[str], query_string: str, scheme: str, client: ClientInfo
) -> tuple[SocketIdentity, AuditLog]:
    """Who this socket belongs to, or :class:`SocketRefused` (audited here and now). ``headers``
    have lower-case names; ``scheme`` is the ASGI scope's (``ws``/``wss``). The accepted connect's
    audit entry is returned for the caller to write (the socket consumer batches them)."""
    query = parse_qs(query_string)
    method: str = (
        "bearer"
        if any(s.startswith(BEARER_PREFIX) for s in subprotocols)
        else ("ticket" if "ticket" in query else "session")
    )
    try:
        origin = headers.get("origin")
        secure = connection_secure(scheme=scheme, headers=headers)
        if origin is not None and not origin_allowed(origin, host=headers.get("host"), secure=secure):
            raise SocketRefused(close_code=4403, reason="origin_refused", message="This origin may not connect.")
        method, user, generation, expires_at = _authenticate(headers=headers, subprotocols=subprotocols, query=query)
    except SocketRefused as refused:
        # Nobody identified: aggregated per address and reason (decision 0025); a known user: one row.
        audit_refusal_record(
            action=AuditAction.SOCKET_REFUSE,
            reason=refused.reason,
            actor=refused.user,
            client=client,
            details={"method": method, "origin": headers.get("origin", "")[:200]},
        )
        raise
    entry = audit_entry_build(
        action=AuditAction.SOCKET_CONNECT,
        outcome=AuditOutcome.SUCCESS,
        actor=user,
        client=client,
        details={"method": method, "origin": headers.get("origin", "")[:200]},
    )
    identity = SocketIdentity(
        user_id=user.pk,
        user_name=user.get_full_name() or user.get_username(),
        method=method,
        # A bearer token was just checked against the generation, so it is read once.
        generation=token_generation_current(user_id=user.pk) if generation is None else generation,
        expires_at=expires_at,
    )
    return identity, entry


def socket_token_refresh(*, identity: SocketIdentity, raw: str, client: ClientInfo) -> SocketIdentity:
    """The in-band ``auth`` op: a new token for the same user extends the socket's life."""
    try:
        user = access_token_verify(raw=raw)
    except TokenRefused as exc:
        audit_record(
            action=AuditAction.SOCKET_REFUSE,
            outcome=AuditOutcome.REFUSED,
            client=client,
            details={"method": "auth_op", "reason": exc.reason},
        )
        raise SocketRefused(close_code=4401, reason=exc.reason, message=exc.message) from None
    if user.pk != identity.user_id:
        audit_record(
            action=AuditAction.SOCKET_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=user,
            client=client,
            details={"method": "auth_op", "reason": "other_user", "socket_user": identity.user_id},
        )
        raise SocketRefused(close_code=4401, reason="other_user", message="The token belongs to another user.")
    expires = jwt.decode(raw, options={"verify_signature": False}).get("exp")
    return SocketIdentity(
        user_id=identity.user_id,
        user_name=identity.user_name,
        method="bearer",
        generation=token_generation_current(user_id=user.pk),
        expires_at=float(expires) if expires else time.time() + settings.JWT_ACCESS_TTL,
    )
