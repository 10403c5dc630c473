"""Writing the audit log. Every access decision (granted or refused) goes through :func:`audit_record`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import structlog
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest

from monitoring.metrics import AUDIT_ENTRIES
from wedsync.models import AuditLog, AuditOutcome

logger = structlog.get_logger(__name__)

_USER_AGENT_MAX = 512


class AuditAction(enum.StrEnum):
    TOKEN_ISSUE = "auth.token.issue"
    TOKEN_REFRESH = "auth.token.refresh"
    TOKEN_REFUSE = "auth.token.refuse"
    LOGOUT = "auth.logout"
    TOKENS_REVOKE = "auth.tokens.revoke"
    API_AUTH_REFUSE = "api.auth.refuse"
    API_REFUSE = "api.refuse"
    TICKET_ISSUE = "realtime.ticket.issue"
    MEMBER_ADD = "member.add"
    MEMBER_CHANGE = "member.change"
    MEMBER_REMOVE = "member.remove"
    RECORD_CHANGE = "record.change"
    WEDDING_DELETE = "wedding.delete"
    ALERT_ACK = "presence.alert.ack"
    ALERT_REFUSE = "presence.alert.refuse"
    SOCKET_CONNECT = "realtime.connect"
    SOCKET_REFUSE = "realtime.connect.refuse"
    DEVICE_LIMIT_CLOSE = "realtime.device_limit.close"
    SUBSCRIBE_REFUSE = "realtime.subscribe.refuse"
    PUBLISH_REFUSE = "realtime.publish.refuse"
    RATE_LIMIT_REFUSE = "realtime.rate_limit.refuse"
    PRESENCE_REFUSE = "presence.refuse"
    PRESENCE_EMERGENCY_LOCATION = "presence.emergency.location"
    EMERGENCY_RESOLVE = "presence.emergency.resolve"
    EMERGENCY_REFUSE = "presence.emergency.refuse"
    # A vendor's publish that reached beyond the type's audience because an emergency was open.
    EMERGENCY_PUBLISH_WIDEN = "presence.emergency.publish"
    PRESENCE_SNAPSHOT_REFUSE = "presence.snapshot.refuse"
    # A staff user asked the oversight panel for an object of a wedding they do not oversee.
    ADMIN_REFUSE = "admin.refuse"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a request came from, for the audit log."""

    ip: str | None
    user_agent: str

    @classmethod
    def from_request(cls, request: HttpRequest) -> ClientInfo:
        return cls(
            ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=str(request.META.get("HTTP_USER_AGENT", ""))[:_USER_AGENT_MAX],
        )


def _without_nul(value: Any) -> Any:
    """``value`` with NUL characters taken out of every string (and key): PostgreSQL stores none,
    in text or jsonb, and an audit entry must not fail for what a client put in a header or a name."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value


def audit_entry_build(
    *,
    action: AuditAction,
    outcome: AuditOutcome,
    actor: User | AnonymousUser | None = None,
    actor_label: str = "",
    wedding_id: int | None = None,
    target: str = "",
    client: ClientInfo | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """An audit entry not yet written: pass it to :func:`audit_entries_write` (alone or with others)."""
    known_actor = actor if isinstance(actor, User) else None
    return AuditLog(
        actor=known_actor,
        actor_label=_without_nul(actor_label or (known_actor.get_username() if known_actor else ""))[:150],
        wedding_id=wedding_id,
        action=action.value,
        target=_without_nul(target)[:200],
        outcome=outcome,
        ip=client.ip if client else None,
        user_agent=_without_nul(client.user_agent)[:_USER_AGENT_MAX] if client else "",
        details=_without_nul(details or {}),
    )


def audit_entries_write(*, entries: list[AuditLog]) -> None:
    """Write entries built by :func:`audit_entry_build`: one INSERT for all of them (a hot path's
    batch), or an ordinary save for one."""
    if len(entries) == 1:
        entries[0].save()
    elif entries:
        AuditLog.objects.bulk_create(entries)
    for entry in entries:
        AUDIT_ENTRIES.labels(action=entry.action, outcome=str(entry.outcome)).inc()
        logger.info(
            "audit",
            action=entry.action,
            outcome=str(entry.outcome),
            actor=entry.actor_label,
            wedding=entry.wedding_id,
            target=entry.target,
            ip=entry.ip,
        )


def audit_record(
    *,
    action: AuditAction,
    outcome: AuditOutcome,
    actor: User | AnonymousUser | None = None,
    actor_label: str = "",
    wedding_id: int | None = None,
    target: str = "",
    client: ClientInfo | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    entry = audit_entry_build(
        action=action,
        outcome=outcome,
        actor=actor,
        actor_label=actor_label,
        wedding_id=wedding_id,
        target=target,
        client=client,
        details=details,
    )
    audit_entries_write(entries=[entry])
    return entry
