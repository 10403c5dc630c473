"""Writing the audit log. Every access decision (granted or refused) goes through :func:`audit_record`,
except refusals of callers nobody identified, which go through :func:`audit_refusal_record`.

Unauthenticated refusals (a bad handshake, a missing or bad bearer token, a 429) cost an attacker
nothing, so one row each would let anyone grow the table without bound. They are aggregated per
source address, action and reason over fixed windows of ``AUDIT_REFUSAL_WINDOW_SECONDS``: the
first of a window is written at once, the rest are counted in Redis and written as one row with
their count once the window has closed (by the next refusal anywhere, or by the beat task
:func:`audit_refusals_flush`). A refusal of a known user is still one row each. Decision 0025.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection
from django.http import HttpRequest

from monitoring.metrics import AUDIT_ENTRIES, AUDIT_REFUSALS_COUNTED
from wedsync.client_address import request_client_address, scope_client_address, scope_header_values
from wedsync.models import AuditLog, AuditOutcome
from wedsync.redis_clients import redis_client
from wedsync.redis_keys import AUDIT_REFUSALS_PENDING, audit_refusal_window_key

logger = structlog.get_logger(__name__)

_USER_AGENT_MAX = 512


class AuditAction(enum.StrEnum):
    TOKEN_ISSUE = "auth.token.issue"
    TOKEN_REFRESH = "auth.token.refresh"
    TOKEN_REFUSE = "auth.token.refuse"
    LOGOUT = "auth.logout"
    TOKENS_REVOKE = "auth.tokens.revoke"
    API_AUTH_REFUSE = "api.auth.refuse"
    METRICS_REFUSE = "metrics.refuse"
    NODE_DRAIN = "node.drain"
    NODE_RESUME = "node.resume"
    ADMIN_LOGIN = "admin.login"
    ADMIN_LOGIN_REFUSE = "admin.login.refuse"
    ADMIN_LOGIN_LOCKOUT = "admin.login.lockout"
    API_REFUSE = "api.refuse"
    SERVICE_ACCOUNT_CHANGE = "api.service_account.change"
    API_KEY_ISSUE = "api.key.issue"
    API_KEY_ROTATE = "api.key.rotate"
    API_KEY_REVOKE = "api.key.revoke"
    # An integrator's event webhook subscription (docs/decisions/0032): created, deleted, its secret
    # rotated, paused and resumed (by staff in the admin, or resumed by its account's key).
    EVENT_WEBHOOK_CREATE = "api.webhook.create"
    EVENT_WEBHOOK_DELETE = "api.webhook.delete"
    EVENT_WEBHOOK_ROTATE = "api.webhook.rotate"
    EVENT_WEBHOOK_PAUSE = "api.webhook.pause"
    EVENT_WEBHOOK_RESUME = "api.webhook.resume"
    TICKET_ISSUE = "realtime.ticket.issue"
    MEMBER_ADD = "member.add"
    MEMBER_CHANGE = "member.change"
    MEMBER_REMOVE = "member.remove"
    RECORD_CHANGE = "record.change"
    RECORD_REFUSE = "record.refuse"
    CONFLICT_RESOLVE = "record.conflict.resolve"
    RECORD_STRATEGY_CHANGE = "record.strategy.change"
    WEDDING_DELETE = "wedding.delete"
    WEDDING_CHANGE = "wedding.change"
    ALERT_ACK = "presence.alert.ack"
    ALERT_REFUSE = "presence.alert.refuse"
    SOCKET_CONNECT = "realtime.connect"
    SOCKET_REFUSE = "realtime.connect.refuse"
    DEVICE_LIMIT_CLOSE = "realtime.device_limit.close"
    SUBSCRIBE_REFUSE = "realtime.subscribe.refuse"
    # A staff observer's socket asked to write (publish, sync, presence, ack): observers only watch.
    OBSERVER_REFUSE = "realtime.observer.refuse"
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
    """Where a request or a socket came from, for the audit log (the address read through the trusted
    proxy chain: :mod:`wedsync.client_address`)."""

    ip: str | None
    user_agent: str

    @classmethod
    def from_request(cls, request: HttpRequest) -> ClientInfo:
        return cls(
            ip=request_client_address(request),
            user_agent=str(request.META.get("HTTP_USER_AGENT", ""))[:_USER_AGENT_MAX],
        )

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> ClientInfo:
        """From an ASGI connection's scope (a socket's handshake)."""
        agents = scope_header_values(scope, b"user-agent")  # the last one counts, as in the consumer's headers
        return cls(ip=scope_client_address(scope), user_agent=(agents[-1] if agents else "")[:_USER_AGENT_MAX])


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


# --- Unauthenticated refusals, aggregated (decision 0025) -------------------------------------------

# One hash per (window, action, reason, address): its count and what the summary row needs. The
# pending sorted set holds the windows that counted more than their first refusal, scored by when
# they end, so a flush finds the closed ones without scanning.
_REFUSAL_KEEP_SECONDS = 24 * 3600  # a window nobody flushed within a day is given up (logged as lost)
_FLUSH_GRACE_SECONDS = 2.0  # a window is flushed this long after its end: nodes' clocks differ a little
_FLUSH_BATCH = 500  # windows written per INSERT

# Count one refusal; the first of its window also stores the fields, the second queues the window
# for its summary. Returns the window's count and how many windows are ready to flush.
_RECORD_LUA = """
local window, pending = KEYS[1], KEYS[2]
local count = redis.call('HINCRBY', window, 'count', 1)
if count == 1 then
    redis.call('HSET', window, 'action', ARGV[1], 'reason', ARGV[2], 'ip', ARGV[3], 'start', ARGV[4], 'end', ARGV[5])
    redis.call('EXPIRE', window, ARGV[6])
elseif count == 2 then
    redis.call('ZADD', pending, ARGV[5], window)
    redis.call('EXPIRE', pending, ARGV[6])
end
return {count, redis.call('ZCOUNT', pending, '-inf', ARGV[7])}
"""
# Take the windows that ended before ARGV[1] (at most ARGV[2]): each is read and deleted in one
# step, so two flushers never write the same window twice. Windows that expired unflushed are
# dropped from the set (and counted, for the log).
_CLAIM_LUA = """
local pending = KEYS[1]
local claimed, expired = {}, 0
for _, window in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
    local fields = redis.call('HGETALL', window)
    redis.call('DEL', window)
    redis.call('ZREM', pending, window)
    if #fields > 0 then
        table.insert(fields, 'key')
        table.insert(fields, window)
        claimed[#claimed + 1] = fields
    else
        expired = expired + 1
    end
end
return {claimed, expired}
"""
# Put a claimed window back when its row could not be written (the database away): its first
# refusal is written already, so a window a late refusal opened again keeps only what it adds.
_RESTORE_LUA = """
local window, pending = KEYS[1], KEYS[2]
local count = tonumber(ARGV[1])
if redis.call('EXISTS', window) == 1 then
    redis.call('HINCRBY', window, 'count', count - 1)
else
    redis.call('HSET', window, 'count', count, 'action', ARGV[2], 'reason', ARGV[3], 'ip', ARGV[4],
        'start', ARGV[5], 'end', ARGV[6])
end
redis.call('EXPIRE', window, ARGV[7])
redis.call('ZADD', pending, ARGV[6], window)
redis.call('EXPIRE', pending, ARGV[7])
"""


@dataclass(frozen=True, slots=True)
class _Scripts:
    record: Any
    claim: Any
    restore: Any


@functools.cache
def _refusal_scripts(redis_url: str) -> _Scripts:
    # Short timeouts: a refusal is answered on a request thread, which a hung Redis must not hold.
    client = redis_client(socket_timeout=0.5)
    return _Scripts(
        record=client.register_script(_RECORD_LUA),
        claim=client.register_script(_CLAIM_LUA),
        restore=client.register_script(_RESTORE_LUA),
    )


def _window_bounds(now: float) -> tuple[int, int]:
    length = settings.AUDIT_REFUSAL_WINDOW_SECONDS
    start = int(now // length) * length
    return start, start + length


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def audit_refusal_record(
    *,
    action: AuditAction,
    reason: str,
    client: ClientInfo | None,
    actor: User | AnonymousUser | None = None,
    actor_label: str = "",
    wedding_id: int | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Audit a refusal. ``reason`` is a short code from a closed set (it is part of the key).

    A refusal that names a known user (``actor`` is a :class:`User`) is one row, as
    :func:`audit_record` writes it. Anyone else's is aggregated per (address, action, reason) and
    window: the first of the window is written at once with ``details.count`` = 1 and the window's
    ``window_start``/``window_end``; the rest are counted in Redis and written later as one row
    whose ``details.count`` is how many they were (so the counts of a window's rows add up to its
    refusals). Without Redis (embedded, or Redis away) every refusal is its own row: better a big
    log than a lost one.
    """
    details = {**(details or {}), "reason": reason}
    redis_url: str | None = settings.REDIS_URL
    count, due = 1, 0
    if not isinstance(actor, User) and redis_url:
        address = (client.ip if client else None) or ""
        count, due, window = _refusal_count(redis_url=redis_url, action=action, reason=reason, address=address)
        details.update(window)
    # Windows that closed are written first, so rows stay in the order things happened; not from
    # inside a caller's transaction, whose rollback would take rows whose counts left Redis (beat
    # writes them then).
    if due and not connection.in_atomic_block:
        audit_refusals_flush()
    if count == 1:
        audit_record(
            action=action,
            outcome=AuditOutcome.REFUSED,
            actor=actor,
            actor_label=actor_label,
            wedding_id=wedding_id,
            target=target,
            client=client,
            details=details,
        )
    else:
        AUDIT_REFUSALS_COUNTED.labels(action=action.value).inc()


def _refusal_count(
    *, redis_url: str, action: AuditAction, reason: str, address: str
) -> tuple[int, int, dict[str, Any]]:
    """Count a refusal in its window: (its number in the window, windows ready to flush, the
    window's fields for a first row). Redis away: (1, 0, {}), so it is written on its own."""
    now = time.time()
    start, end = _window_bounds(now)
    try:
        count, due = _refusal_scripts(redis_url).record(
            keys=[
                audit_refusal_window_key(start=start, action=action.value, reason=reason, address=address),
                AUDIT_REFUSALS_PENDING,
            ],
            args=[
                action.value,
                reason,
                address,
                start,
                end,
                end - int(now) + _REFUSAL_KEEP_SECONDS,
                now - _FLUSH_GRACE_SECONDS,
            ],
        )
    except redis.RedisError as error:
        logger.warning("audit.refusal_counter_unavailable", action=action.value, error=repr(error))
        return 1, 0, {}
    return int(count), int(due), {"count": 1, "window_start": _iso(start), "window_end": _iso(end)}


def _summary_entry(fields: dict[str, str]) -> AuditLog:
    start, end = int(fields["start"]), int(fields["end"])
    return audit_entry_build(
        action=AuditAction(fields["action"]),
        outcome=AuditOutcome.REFUSED,
        client=ClientInfo(ip=fields["ip"] or None, user_agent=""),
        details={
            "reason": fields["reason"],
            "count": int(fields["count"]) - 1,  # the first of the window has its own row
            "window_start": _iso(start),
            "window_end": _iso(end),
            "aggregated": True,
        },
    )


def audit_refusals_flush() -> int:
    """Write one row for every closed window that counted refusals after its first; returns how many
    rows. Run by beat every window and by the first refusal after a window closes. A window is
    taken out of Redis and written in one step each: a process that dies between the two loses
    that window's count (and only that); a database error puts it back for the next flush."""
    redis_url: str | None = settings.REDIS_URL
    if not redis_url:
        return 0
    scripts = _refusal_scripts(redis_url)
    written = 0
    while True:
        claimed_raw, expired = scripts.claim(
            keys=[AUDIT_REFUSALS_PENDING], args=[time.time() - _FLUSH_GRACE_SECONDS, _FLUSH_BATCH]
        )
        if expired:
            logger.error("audit.refusal_windows_lost", windows=int(expired))
        claimed = [_decoded_fields(raw) for raw in claimed_raw]
        if not claimed:
            return written
        try:
            audit_entries_write(entries=[_summary_entry(fields) for fields in claimed])
        except Exception:
            for fields in claimed:
                scripts.restore(
                    keys=[fields["key"], AUDIT_REFUSALS_PENDING],
                    args=[
                        fields["count"],
                        fields["action"],
                        fields["reason"],
                        fields["ip"],
                        fields["start"],
                        fields["end"],
                        _REFUSAL_KEEP_SECONDS,
                    ],
                )
            raise
        written += len(claimed)
        if len(claimed) < _FLUSH_BATCH:
            return written


def _decoded_fields(raw: list[bytes]) -> dict[str, str]:
    values = [item.decode() for item in raw]
    return dict(zip(values[::2], values[1::2], strict=True))
