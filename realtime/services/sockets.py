"""Socket-side writes that need the caller's current membership (read through the node's cache, or fresh)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User

from realtime.audience import AudienceError, audience_default, audience_narrow
from realtime.auth import SocketIdentity, socket_identify
from realtime.limits.publish_rate import publish_rate_check
from realtime.limits.shedding import ShedVerdict
from realtime.names import DEFAULT_PRIORITY, EventType, Priority
from realtime.protocol import FrameError, event_data_validate
from realtime.selectors import (
    WEDDING_DAY_HEARTBEAT,
    MemberLookup,
    MembershipView,
    SubscriptionDenied,
    member_for_publish,
    membership_for_topic,
    memberships_for_user,
    observer_membership,
)
from realtime.services.events import (
    PublishedEvent,
    PublishRefused,
    event_for_idempotency_key,
    event_publish,
    member_event_publish,
)
from wedsync.models import AuditLog, AuditOutcome, Member, ServiceAccount, Wedding
from wedsync.selectors import wedding_may_oversee
from wedsync.services.audit import AuditAction, ClientInfo, audit_entry_build, audit_record
from wedsync.services.throttles import auth_attempt_hit


@dataclass(frozen=True, slots=True)
class SocketOpened:
    identity: SocketIdentity
    memberships: list[MembershipView]
    heartbeat: int  # seconds, for the welcome frame
    audit_entry: AuditLog  # the accepted connect's entry, still to write (realtime.audit batches them)


def socket_open(
    *, headers: dict[str, str], subprotocols: list[str], query_string: str, scheme: str, client: ClientInfo
) -> SocketOpened:
    """Everything a connect reads, in one thread hop: who the socket is (a refusal is audited and
    raised as :class:`~realtime.auth.SocketRefused`), then their memberships for the welcome."""
    identity, entry = socket_identify(
        headers=headers, subprotocols=subprotocols, query_string=query_string, scheme=scheme, client=client
    )
    if identity.observer:  # a board watches wedding days: the wedding-day heartbeat notices a dead link soonest
        return SocketOpened(identity=identity, memberships=[], heartbeat=WEDDING_DAY_HEARTBEAT, audit_entry=entry)
    memberships, heartbeat = memberships_for_user(user_id=identity.user_id)
    return SocketOpened(identity=identity, memberships=memberships, heartbeat=heartbeat, audit_entry=entry)


def socket_shed_audit_entry(
    *, accepted_entry: AuditLog, verdict: ShedVerdict, client: ClientInfo, urgent: bool = False
) -> AuditLog:
    """The audit of a connect load shedding refused (realtime.limits.shedding), as the user the
    connect's own entry names; ``urgent``: one let in to raise an emergency that raised none."""
    entry = audit_entry_build(
        action=AuditAction.SOCKET_REFUSE,
        outcome=AuditOutcome.REFUSED,
        actor_label=accepted_entry.actor_label,
        client=client,
        details={
            "reason": "shed_urgent_unused" if urgent else "shed",
            "tier": str(verdict.tier),
            "cause": str(verdict.cause),
            "retry_after": verdict.retry_after,
            "sockets": verdict.sockets,
            "loop_lag": verdict.loop_lag,
        },
    )
    entry.actor_id = accepted_entry.actor_id
    return entry


def socket_subscribe_check(*, user_id: int, wedding_id: int, client: ClientInfo) -> MembershipView:
    """The fresh access check of a ``subscribe``; every refusal is audited."""
    try:
        return membership_for_topic(user_id=user_id, wedding_id=wedding_id)
    except SubscriptionDenied:
        subscribe_refusal_audit(user_id=user_id, wedding_id=wedding_id, client=client)
        raise


def socket_observe_check(*, user_id: int, wedding_id: int, client: ClientInfo) -> MembershipView:
    """An observer's ``subscribe``: the user must oversee the wedding as staff; refusals audited."""
    try:
        return observer_membership(user_id=user_id, wedding_id=wedding_id)
    except SubscriptionDenied:
        subscribe_refusal_audit(user_id=user_id, wedding_id=wedding_id, client=client, reason="not overseen")
        raise


def observer_write_refusal_audit(*, user_id: int, op: str, topic: str, client: ClientInfo) -> None:
    """An observer's socket asked to change something (publish, sync, presence, ack): it only watches."""
    audit_record(
        action=AuditAction.OBSERVER_REFUSE,
        outcome=AuditOutcome.REFUSED,
        target=topic[:200],  # no wedding id: the topic may name a wedding that does not exist
        client=client,
        details={"user": user_id, "op": op, "reason": "observer"},
    )


def socket_event_publish(
    *,
    user_id: int,
    wedding_id: int,
    type_name: str,
    data: dict[str, Any],
    to: list[str] | None,
    priority_name: str | None,
    idempotency_key: str | None,
    client: ClientInfo,
    member_lookup: MemberLookup = member_for_publish,
) -> PublishedEvent:
    """A ``publish`` frame: as the user's *current* active member of the wedding (a role may have
    changed since the socket subscribed), idempotent retries first, then the rate limit. A node
    reads the membership through its cache (``member_lookup``, realtime.member_cache)."""
    member = member_lookup(user_id=user_id, wedding_id=wedding_id)
    if member is None:
        audit_record(
            action=AuditAction.PUBLISH_REFUSE,
            outcome=AuditOutcome.REFUSED,
            wedding_id=wedding_id,
            target=f"type:{type_name}"[:200],
            client=client,
            details={"user": user_id, "reason": "not a member"},
        )
        raise PublishRefused(code="forbidden", message="You are no longer a member of this wedding.")
    return member_publish_checked(
        member=member,
        type_name=type_name,
        data=data,
        to=to,
        priority_name=priority_name,
        idempotency_key=idempotency_key,
        client=client,
    )


def member_publish_checked(
    *,
    member: Member,
    type_name: str,
    data: dict[str, Any],
    to: list[str] | None,
    priority_name: str | None,
    idempotency_key: str | None,
    client: ClientInfo,
) -> PublishedEvent:
    """A publish by ``member`` (read as active just now by the caller): idempotent retries first,
    then the rate limit. Raises :class:`PublishRefused`."""
    wedding_id = member.wedding_id
    if idempotency_key is not None:
        # A retry of something already stored is answered with it, at no cost to the budget.
        first = event_for_idempotency_key(sender=member, idempotency_key=idempotency_key)
        if first is not None:
            return first
    rate = publish_rate_check(member_id=member.pk, role=member.role, event_type=type_name)
    if not rate.allowed:
        audit_record(
            action=AuditAction.RATE_LIMIT_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=member.user,
            wedding_id=wedding_id,
            target=f"type:{type_name}"[:200],
            client=client,
            details={"member": member.pk, "role": member.role, "reason": "rate_limited"},
        )
        raise PublishRefused(
            code="rate_limited", message="Too many messages: wait and retry.", retry_after=rate.retry_after
        )
    return member_event_publish(
        member=member,
        type_name=type_name,
        data=data,
        to=to,
        priority_name=priority_name,
        idempotency_key=idempotency_key,
        client=client,
    )


def subscribe_refusal_audit(*, user_id: int, wedding_id: int, client: ClientInfo, reason: str = "not a member") -> None:
    audit_record(
        action=AuditAction.SUBSCRIBE_REFUSE,
        outcome=AuditOutcome.REFUSED,
        wedding_id=wedding_id,
        target=f"wedding:{wedding_id}",
        client=client,
        details={"user": user_id, "reason": reason},
    )


def device_limit_close_audit(*, user_id: int, connection_id: str, closed: list[str], client: ClientInfo) -> None:
    """A connect went past the user's device limit: ``closed`` are the connections that the policy
    (REALTIME_DEVICE_LIMIT_POLICY) closes with 4029, this one itself under ``refuse_newest``."""
    audit_record(
        action=AuditAction.DEVICE_LIMIT_CLOSE,
        outcome=AuditOutcome.REFUSED,
        target=f"user:{user_id}",
        client=client,
        details={
            "user": user_id,
            "connection": connection_id,
            "closed": closed,
            "policy": settings.REALTIME_DEVICE_LIMIT_POLICY,
        },
    )


def socket_abuse_audit(*, user_id: int, connection_id: str, op: str, refusals: int, client: ClientInfo) -> None:
    """A socket kept sending past its budgets (``refusals`` rate_limited answers within a minute,
    the last for ``op``) and is closed 4029."""
    audit_record(
        action=AuditAction.RATE_LIMIT_REFUSE,
        outcome=AuditOutcome.REFUSED,
        target=f"user:{user_id}",
        client=client,
        details={"user": user_id, "connection": connection_id, "op": op, "refusals": refusals, "reason": "abuse"},
    )


def history_viewer_check(*, user_id: int, wedding_id: int, client: ClientInfo) -> MembershipView:
    """Whose view of the wedding's log the caller gets over the API: an active member's own, or an
    observer's (a planner's, without member-addressed events) for staff who oversee it. Refused
    ``forbidden`` (audited) for anyone else, alike for a wedding that does not exist."""
    try:
        return membership_for_topic(user_id=user_id, wedding_id=wedding_id)
    except SubscriptionDenied:
        pass
    try:
        return observer_membership(user_id=user_id, wedding_id=wedding_id)
    except SubscriptionDenied:
        subscribe_refusal_audit(user_id=user_id, wedding_id=wedding_id, client=client, reason="history: not visible")
        message = "Only the wedding's members and the staff who oversee it may read its events."
        raise SubscriptionDenied(code="forbidden", message=message) from None


# Staff and integrators announce; every other type is a member's (a vendor's status, an emergency).
STAFF_EVENT_TYPES = frozenset({EventType.CHAT_MESSAGE})


def api_event_publish(
    *,
    user: User | AnonymousUser,
    account: ServiceAccount | None,
    wedding_id: int,
    type_name: str,
    data: dict[str, Any],
    to: list[str] | None,
    priority_name: str | None,
    idempotency_key: str,
    client: ClientInfo,
) -> PublishedEvent:
    """A publish over the API: as the member the caller is in the wedding (a person), else as staff
    or ``account``'s key (an announcement). Raises :class:`PublishRefused`."""
    if not isinstance(user, User):
        raise PublishRefused(code="forbidden", message="Sign in first.")
    member = member_for_publish(user_id=user.pk, wedding_id=wedding_id) if account is None else None
    if member is not None:
        return member_publish_checked(
            member=member,
            type_name=type_name,
            data=data,
            to=to,
            priority_name=priority_name,
            idempotency_key=idempotency_key,
            client=client,
        )
    return staff_event_publish(
        user=user,
        wedding_id=wedding_id,
        type_name=type_name,
        data=data,
        to=to,
        priority_name=priority_name,
        sender_name=account.name if account is not None else (user.get_full_name() or user.get_username()),
        client=client,
    )


def staff_event_publish(
    *,
    user: User,
    wedding_id: int,
    type_name: str,
    data: dict[str, Any],
    to: list[str] | None,
    priority_name: str | None,
    sender_name: str,
    client: ClientInfo,
) -> PublishedEvent:
    """A publish over the API by staff who oversee the wedding, or a service account's key (its
    ``publish`` scope checked before): an announcement (``chat.message``), from ``sender_name`` as
    staff, to the type's audience narrowed by ``to``, at most ``API_PUBLISH_RATE`` per credential.
    Raises :class:`PublishRefused`; refusals of access are audited."""
    if not wedding_may_oversee(user=user, wedding_id=wedding_id):
        audit_record(
            action=AuditAction.PUBLISH_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=user,
            target=f"wedding:{wedding_id}",
            client=client,
            details={"reason": "not a member and not overseen", "type": type_name[:64]},
        )
        raise PublishRefused(
            code="forbidden", message="Only the wedding's members and the staff who oversee it may publish."
        )
    if not Wedding.objects.filter(pk=wedding_id).exists():  # a superuser oversees any id
        raise PublishRefused(code="not_found", message=f"There is no wedding {wedding_id}.")
    allowed = ", ".join(sorted(STAFF_EVENT_TYPES))
    try:
        event_type = EventType(type_name)
    except ValueError:
        raise PublishRefused(code="invalid", message=f"type: unknown event type {type_name[:64]!r}") from None
    if event_type not in STAFF_EVENT_TYPES:  # before the data: server-only types have no client schema
        raise PublishRefused(code="invalid", message=f"type: staff publish {allowed}")
    try:
        data = event_data_validate(event_type, data)
    except FrameError as exc:
        raise PublishRefused(code="invalid", message=exc.message) from None
    priority = DEFAULT_PRIORITY[event_type] if priority_name is None else Priority.from_wire(priority_name)
    if priority >= Priority.CRITICAL:
        raise PublishRefused(code="invalid", message=f"priority: {priority_name} is not allowed for {event_type}")
    audience = audience_default(event_type=event_type, wedding_id=wedding_id, sender=None, data=data)
    if to is not None:
        try:
            audience = audience_narrow(default=audience, to=to, wedding_id=wedding_id)
        except AudienceError as exc:
            raise PublishRefused(code="invalid", message=f"to: {exc}") from None
    wait = auth_attempt_hit(bucket="api_publish", identity=str(user.pk), rate=settings.API_PUBLISH_RATE)
    if wait is not None:
        raise PublishRefused(code="rate_limited", message="Too many publishes: wait and retry.", retry_after=wait)
    return event_publish(
        wedding_id=wedding_id,
        event_type=event_type,
        data=data,
        audience=audience,
        priority=priority,
        sender_view={"name": sender_name, "role": "staff"},
    )
