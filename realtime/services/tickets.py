"""Socket tickets: single-use, short-lived passes for ``/ws/v1/?ticket=...``."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.utils import timezone

from realtime.models import RealtimeTicket
from wedsync.models import AuditOutcome
from wedsync.refusals import Refused
from wedsync.selectors import token_generation_current
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.retention import PurgeResult, orm_batch_delete, purge_in_batches


class TicketRefused(Refused):
    """A ticket not issued or not accepted; ``reason`` is a short stable code for the audit log."""

    def __init__(self, *, reason: str, message: str) -> None:
        super().__init__(code="unauthorized", message=message)
        self.reason = reason


def _ticket_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TicketGrant:
    """What a used ticket lets its socket be: the user, the token generation it was issued at, and
    the credential that asked for it, whose end is the socket's end too (a session, or a token's
    expiry, epoch seconds)."""

    user: User
    generation: int
    session_key: str | None
    credential_expires_at: float | None


def ticket_issue(
    *,
    user: User,
    client: ClientInfo,
    generation: int | None = None,
    session_key: str | None = None,
    credential_expires_at: datetime | None = None,
) -> tuple[str, int]:
    """A new ticket for ``user`` and its lifetime in seconds. Only its hash is stored. Pass what
    the request's credential carries: its token generation (refused, ``revoked``, if a revocation
    landed since the request was authenticated), and the browser session or the token expiry that
    the socket it opens ends with."""
    current = token_generation_current(user_id=user.pk)
    if generation is not None and generation != current:
        raise TicketRefused(reason="revoked", message="Your access was revoked: log in again.")
    raw = secrets.token_urlsafe(32)
    ttl = settings.REALTIME_TICKET_TTL
    RealtimeTicket.objects.create(
        ticket_hash=_ticket_hash(raw),
        user=user,
        token_generation=current,
        expires_at=timezone.now() + timedelta(seconds=ttl),
        session_key=session_key,
        credential_expires_at=credential_expires_at,
    )
    audit_record(action=AuditAction.TICKET_ISSUE, outcome=AuditOutcome.SUCCESS, actor=user, client=client)
    return raw, ttl


def ticket_consume(*, raw: str) -> TicketGrant:
    """Use a ticket up. Succeeds once, within its lifetime, for a user whose tokens were not revoked.

    The caller (the socket's authentication) audits the outcome with the connection's details.

    The conditional UPDATE is what makes it single-use: of two sockets racing with one ticket
    (on one node or two), exactly one sees its row change.
    """
    digest = _ticket_hash(raw)
    now = timezone.now()
    claimed = RealtimeTicket.objects.filter(ticket_hash=digest, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    )
    ticket = RealtimeTicket.objects.select_related("user").filter(ticket_hash=digest).first()
    if ticket is None:
        raise TicketRefused(reason="unknown", message="Unknown ticket.")
    if not claimed:
        if ticket.used_at is not None:
            raise TicketRefused(reason="used", message="The ticket has already been used.")
        raise TicketRefused(reason="expired", message="The ticket has expired.")
    user = ticket.user
    if not user.is_active:
        raise TicketRefused(reason="inactive", message="The user is deactivated.")
    if ticket.token_generation != token_generation_current(user_id=user.pk):
        raise TicketRefused(reason="revoked", message="The ticket has been revoked.")
    if ticket.session_key and not Session.objects.filter(session_key=ticket.session_key, expire_date__gt=now).exists():
        raise TicketRefused(reason="session_ended", message="The session that asked for this ticket has ended.")
    return TicketGrant(
        user=user,
        generation=ticket.token_generation,
        session_key=ticket.session_key,
        credential_expires_at=ticket.credential_expires_at.timestamp() if ticket.credential_expires_at else None,
    )


def tickets_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeResult:
    """Delete tickets that expired ``WEDSYNC_EXPIRED_GRACE_SECONDS`` ago, in bounded batches."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.WEDSYNC_EXPIRED_GRACE_SECONDS)
    return purge_in_batches(
        purge="tickets",
        delete_batch=orm_batch_delete(RealtimeTicket.objects.filter(expires_at__lt=cutoff)),
        batch_size=batch_size,
        max_batches=max_batches,
    )
