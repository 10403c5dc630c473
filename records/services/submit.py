"""Who acts (a member, or staff with a planner's view) and the one door for a client's ops, from a
socket's ``sync`` or the REST API alike (op ids first, then the rate budget)."""

from __future__ import annotations

from typing import Any

from realtime.limits.publish_rate import publish_rate_check
from realtime.selectors import MemberLookup, member_for_publish
from records.registry import Actor
from records.services.ops import SyncRefused, SyncRequest, SyncResult, op_result_kept
from records.services.sync import record_sync, records_sync_batch
from wedsync.models import AuditOutcome, Member
from wedsync.permissions import Role
from wedsync.services.audit import AuditAction, ClientInfo, audit_record


def actor_for_member(member: Member) -> Actor:
    return Actor(user=member.user, wedding_id=member.wedding_id, role=member.role, member=member)


def actor_for_staff(*, user: Any, wedding_id: int) -> Actor:
    """Staff who oversee a wedding act with a planner's view and rank, as no member."""
    return Actor(user=user, wedding_id=wedding_id, role=Role.PLANNER.value, member=None)


def socket_records_sync(
    *,
    user_id: int,
    wedding_id: int,
    requests: list[SyncRequest],
    atomic: bool,
    client: ClientInfo,
    member_lookup: MemberLookup = member_for_publish,
) -> list[SyncResult]:
    """A socket's ``sync``: as the user's current active member (a role may have changed since the
    socket subscribed; a node reads it through its cache), through :func:`records_sync_submit`."""
    member = member_lookup(user_id=user_id, wedding_id=wedding_id)
    if member is None:
        audit_record(
            action=AuditAction.RECORD_REFUSE,
            outcome=AuditOutcome.REFUSED,
            wedding_id=wedding_id,
            target=f"wedding:{wedding_id}",
            client=client,
            details={"user": user_id, "reason": "not a member"},
        )
        raise SyncRefused(code="forbidden", message="You are no longer a member of this wedding.")
    return records_sync_submit(actor=actor_for_member(member), requests=requests, atomic=atomic, client=client)


def records_sync_submit(
    *, actor: Actor, requests: list[SyncRequest], atomic: bool, client: ClientInfo | None = None
) -> list[SyncResult]:
    """The one door for a client's ops, from a socket's ``sync`` or the REST API alike, so both share
    the op-id store and the member's rate budget: resent op ids are answered first at no cost, then
    one op or one batch counts as one message (staff, who are no member, have no such budget)."""
    kept = [op_result_kept(actor=actor, op_id=request.op_id) for request in requests]
    if all(result is not None for result in kept):
        return [result for result in kept if result is not None]
    member = actor.member
    rate = None if member is None else publish_rate_check(member_id=member.pk, role=actor.role, event_type="sync")
    if rate is not None and not rate.allowed:
        audit_record(
            action=AuditAction.RATE_LIMIT_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=actor.user,
            wedding_id=actor.wedding_id,
            target="op:sync",
            client=client,
            details={"member": actor.member_id, "role": actor.role, "reason": "rate_limited"},
        )
        raise SyncRefused(
            code="rate_limited", message="Too many changes: wait and retry.", retry_after=rate.retry_after
        )
    if atomic:
        return records_sync_batch(actor=actor, requests=requests, client=client)
    return [record_sync(actor=actor, request=request, client=client) for request in requests]
