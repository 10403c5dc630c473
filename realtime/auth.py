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

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import User
from django.http.request import split_domain_port, validate_host

from realtime.services.tickets import TicketRefused, ticket_consume
from wedsync.access_revocation import SESSION_GENERATION_KEY, session_generation_revoked
from wedsync.models import AuditLog, AuditOutcome
from wedsync.refusals import Refused
from wedsync.services.audit import (
    AuditAction,
    ClientInfo,
    audit_entry_build,
    audit_record,
    audit_refusal_record,
)
from wedsync.services.auth import TokenRefused, access_token_grant

PROTOCOL_NAME = "wedsync.v1"
BEARER_PREFIX = "bearer."

Method = Literal["bearer", "ticket", "session"]


class SocketRefused(Refused):
    """The socket may not stay: ``close_code`` is 4401 (credentials) or 4403 (origin). ``user`` is
    whom a genuine but unusable credential names (revoked, deactivated), else None."""

    def __init__(self, *, close_code: int, reason: str, message: str, user: User | None = None) -> None:
        super().__init__(code="forbidden" if close_code == 4403 else "unauthorized", message=message)
        self.close_code = close_code
        self.reason = reason
        self.user = user


@dataclass(frozen=True, slots=True)
class SocketIdentity:
    user_id: int
    user_name: str
    method: Method
    generation: int  # the token generation the credential carries; a newer one revokes the socket
    expires_at: float | None  # when a token's socket must have refreshed by (``auth`` op)
    # A browser session's socket (or a ticket a session asked for) ends with the session: logged out,
    # expired or flushed, each node's access check closes it 4401 (realtime.node.housekeeping).
    session_key: str | None = None
    # A staff user watching the weddings they oversee (``?observe=1``): no memberships, writes
    # nothing, is nobody's presence (decision 0029).
    observer: bool = False


@dataclass(frozen=True, slots=True)
class _Credential:
    method: Method
    user: User
    generation: int
    expires_at: float | None = None
    session_key: str | None = None


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


def _session_credential(cookie_header: str) -> _Credential | None:
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
    if not isinstance(user, User) or not user.is_active or store.session_key is None:
        return None
    generation = store.get(SESSION_GENERATION_KEY)
    if session_generation_revoked(session_generation=generation, user_id=user.pk):
        raise SocketRefused(
            close_code=4401, reason="session_revoked", message="This session was logged out: log in again.", user=user
        )
    return _Credential(
        method="session",
        user=user,
        generation=generation if isinstance(generation, int) else 0,
        session_key=store.session_key,
    )


def _authenticate(*, headers: dict[str, str], subprotocols: list[str], query: dict[str, list[str]]) -> _Credential:
    """The credential the socket came with (its generation read from it, never after it was
    checked, so a revocation in between is not missed), or :class:`SocketRefused`."""
    bearer = [item[len(BEARER_PREFIX) :] for item in subprotocols if item.startswith(BEARER_PREFIX)]
    if bearer:
        if PROTOCOL_NAME not in subprotocols:
            raise SocketRefused(close_code=4401, reason="protocol_missing", message=f"Offer {PROTOCOL_NAME} too.")
        try:
            grant = access_token_grant(raw=bearer[0])
        except TokenRefused as exc:
            raise SocketRefused(close_code=4401, reason=exc.reason, message=exc.message, user=exc.user) from None
        return _Credential(method="bearer", user=grant.user, generation=grant.generation, expires_at=grant.expires_at)
    tickets = query.get("ticket")
    if tickets:
        try:
            ticket = ticket_consume(raw=tickets[0])
        except TicketRefused as exc:
            raise SocketRefused(close_code=4401, reason=f"ticket_{exc.reason}", message=exc.message) from None
        return _Credential(
            method="ticket",
            user=ticket.user,
            generation=ticket.generation,
            expires_at=ticket.credential_expires_at,
            session_key=ticket.session_key,
        )
    if "cookie" in headers:
        if "origin" not in headers:  # only browsers send cookies, and browsers always send Origin
            raise SocketRefused(close_code=4403, reason="origin_missing", message="Cookies need an Origin.")
        credential = _session_credential(headers["cookie"])
        if credential is not None:
            return credential
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
        credential = _authenticate(headers=headers, subprotocols=subprotocols, query=query)
        observer = query.get("observe") == ["1"]
        if observer and not (credential.user.is_staff or credential.user.is_superuser):
            raise SocketRefused(
                close_code=4403,
                reason="not_staff",
                message="Only staff may observe weddings: connect without observe.",
                user=credential.user,
            )
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
    user = credential.user
    entry = audit_entry_build(
        action=AuditAction.SOCKET_CONNECT,
        outcome=AuditOutcome.SUCCESS,
        actor=user,
        client=client,
        details={
            "method": credential.method,
            "origin": headers.get("origin", "")[:200],
            **({"observer": True} if observer else {}),
        },
    )
    identity = SocketIdentity(
        user_id=user.pk,
        user_name=user.get_full_name() or user.get_username(),
        method=credential.method,
        generation=credential.generation,
        expires_at=credential.expires_at,
        session_key=credential.session_key,
        observer=observer,
    )
    return identity, entry


def socket_token_refresh(*, identity: SocketIdentity, raw: str, client: ClientInfo) -> SocketIdentity:
    """The in-band ``auth`` op: a new token for the same user extends the socket's life (and a
    session's or ticket's socket becomes a token's: it ends with this token unless refreshed)."""
    try:
        grant = access_token_grant(raw=raw)
    except TokenRefused as exc:
        audit_record(
            action=AuditAction.SOCKET_REFUSE,
            outcome=AuditOutcome.REFUSED,
            client=client,
            details={"method": "auth_op", "reason": exc.reason},
        )
        raise SocketRefused(close_code=4401, reason=exc.reason, message=exc.message) from None
    user = grant.user
    if user.pk != identity.user_id:
        audit_record(
            action=AuditAction.SOCKET_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=user,
            client=client,
            details={"method": "auth_op", "reason": "other_user", "socket_user": identity.user_id},
        )
        raise SocketRefused(close_code=4401, reason="other_user", message="The token belongs to another user.")
    return SocketIdentity(
        user_id=identity.user_id,
        user_name=identity.user_name,
        method="bearer",
        # The generation the token was checked against: read after the check, a revocation in
        # between would have been taken for the socket's own.
        generation=grant.generation,
        expires_at=grant.expires_at if grant.expires_at else time.time() + settings.JWT_ACCESS_TTL,
        observer=identity.observer,
    )
