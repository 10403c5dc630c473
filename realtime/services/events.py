"""Publishing: the one way an event enters the system.

:func:`event_publish` stores the event with the wedding's next ``seq`` (a transactional outbox: the
same transaction may also hold the record change that caused it) and, only after that transaction
commits, hands it to the channel layer once for every node that has subscribers. Nodes that miss it
find the gap by ``seq`` and read it back from this log (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import structlog
from django.db import connection, transaction

from monitoring.metrics import EVENTS_PUBLISHED
from realtime.audience import EVERYONE, Audience, AudienceError, audience_default, audience_narrow
from realtime.layer_send import layer_group_send
from realtime.messages import EventMessage
from realtime.models import Event, WeddingStream, new_epoch
from realtime.names import (
    DEFAULT_PRIORITY,
    PUBLISH_PERMISSION,
    RETIRED_CLIENT_TYPES,
    SERVER_ONLY_TYPES,
    EventType,
    Priority,
    wedding_group,
    wedding_topic,
)
from realtime.protocol import FrameError, event_data_validate, iso
from realtime.services.publish_hooks import PublishGate, publish_gate, reach_widening_reasons
from realtime.services.publish_hooks import PublishRefused as PublishRefused  # the publish API names it here too
from wedsync.models import AuditOutcome, Member
from wedsync.permissions import Role, role_has_permission
from wedsync.refusals import ErrorCode
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    id: uuid.UUID
    wedding_id: int
    seq: int
    duplicate: bool  # an idempotent retry: the first publish's seq and id


def event_frame(event: Event, *, replay: bool) -> dict[str, Any]:
    """The ``event`` server frame of PROTOCOL.md section 4."""
    return {
        "op": "event",
        "topic": wedding_topic(event.wedding_id),
        "seq": event.seq,
        "id": str(event.id),
        "type": event.type,
        "priority": Priority(event.priority).wire,
        "from": event.sender or None,
        "data": event.data,
        "at": iso(event.created_at),
        "replay": replay,
    }


def layer_message(event: Event) -> EventMessage:
    """What crosses the channel layer: the frame plus what a node needs to route it locally."""
    return EventMessage(
        wedding=event.wedding_id,
        seq=event.seq,
        priority=event.priority,
        roles=list(event.audience_roles),
        members=list(event.audience_members),
        frame=event_frame(event, replay=False),
    )


def _fan_out(message: EventMessage) -> None:
    """After commit: one channel-layer message per node, handed over without waiting for Redis
    (realtime.layer_send). A failure loses nothing: the event is stored and nodes repair gaps
    from the log."""
    EVENTS_PUBLISHED.labels(message.frame["type"], message.frame["priority"]).inc()
    layer_group_send(wedding_group(message.wedding), msgspec.structs.replace(message, committed_at=time.time()))


def event_for_idempotency_key(*, sender: Member, idempotency_key: str) -> PublishedEvent | None:
    """The event this sender already stored under this key, if any.

    Every publish with a key asks this first, so it is one hand-written statement read with a
    plain cursor: the ORM's filter compiled it anew on each call (decision 0034)."""
    with connection.cursor() as cursor:
        cursor.execute(_event_for_idempotency_key_sql(), [sender.pk, idempotency_key])
        row = cursor.fetchone()
    if row is None:
        return None
    event_id = Event._meta.pk.to_python(row[0])  # PostgreSQL gives a UUID; SQLite (embedded mode) its hex
    return PublishedEvent(id=event_id, wedding_id=row[1], seq=row[2], duplicate=True)


@functools.cache
def _event_for_idempotency_key_sql() -> str:
    quote_name = connection.ops.quote_name
    column = {field.name: quote_name(field.column) for field in Event._meta.concrete_fields}
    return (  # table and column names come from the models, never from input; at most one row (unique)
        f"SELECT {column['id']}, {column['wedding']}, {column['seq']} FROM {quote_name(Event._meta.db_table)} "  # noqa: S608
        f"WHERE {column['sender_member']} = %s AND {column['idempotency_key']} = %s LIMIT 1"
    )


def _sender_view(member: Member) -> dict[str, Any]:
    return {"member": member.pk, "role": member.role, "name": member.name}


def wedding_stream_lock(*, wedding_id: int) -> WeddingStream:
    """Lock the wedding's stream row until the transaction ends (creating it the first time). It
    serialises publishers of one wedding, and whatever must be decided in the same order as them."""
    WeddingStream.objects.bulk_create([WeddingStream(wedding_id=wedding_id)], ignore_conflicts=True)
    return WeddingStream.objects.select_for_update().get(wedding_id=wedding_id)


def wedding_stream_seq_take(*, wedding_id: int) -> int:
    """The wedding's next ``seq``, taken under its stream row's lock (held until the transaction
    ends, as :func:`wedding_stream_lock` holds it), in one statement that also creates the row the
    first time. A rolled-back transaction gives its seq back, so seqs stay gap-free.

    One statement instead of the ORM's three (insert-if-missing, SELECT FOR UPDATE, UPDATE): they
    were about a fifth of a publish's CPU, and a publish runs for every event (decision 0013).
    """
    table = connection.ops.quote_name(WeddingStream._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (wedding_id, last_seq, epoch) VALUES (%s, 1, %s) "  # noqa: S608
            f"ON CONFLICT (wedding_id) DO UPDATE SET last_seq = {table}.last_seq + 1 RETURNING last_seq",
            [wedding_id, new_epoch()],
        )
        (seq,) = cursor.fetchone()
    return int(seq)


def event_publish(
    *,
    wedding_id: int,
    event_type: EventType,
    data: dict[str, Any],
    sender: Member | None = None,
    audience: Audience | None = None,
    priority: Priority | None = None,
    idempotency_key: str | None = None,
    sender_view: dict[str, Any] | None = None,
) -> PublishedEvent:
    """Store an event under the wedding's next ``seq`` and fan it out after commit.

    ``audience`` defaults to PROTOCOL.md's table for the type. With an ``idempotency_key`` a
    repeated publish by the same sender stores nothing and returns the first event.
    """
    resolved = audience or audience_default(event_type=event_type, wedding_id=wedding_id, sender=sender, data=data)
    roles, members = resolved.as_stored()
    try:
        with transaction.atomic():
            # Taking the seq locks the stream row: publishers of one wedding are serialised, seq is
            # gap-free, and the idempotency check below cannot race another publish of the same key.
            seq = wedding_stream_seq_take(wedding_id=wedding_id)
            if idempotency_key is not None and sender is not None:
                first = event_for_idempotency_key(sender=sender, idempotency_key=idempotency_key)
                if first is not None:
                    raise _AlreadyStored(first)  # rolls the seq back
            event = _event_store(
                wedding_id=wedding_id,
                seq=seq,
                event_type=event_type,
                data=data,
                sender=sender,
                roles=roles,
                members=members,
                priority=priority,
                idempotency_key=idempotency_key,
                sender_view=sender_view,
            )
            message = layer_message(event)
            transaction.on_commit(lambda: _fan_out(message))
    except _AlreadyStored as stored:
        return stored.first
    return PublishedEvent(id=event.id, wedding_id=wedding_id, seq=event.seq, duplicate=False)


class _AlreadyStored(Exception):
    """A retry of a stored publish: leaves the transaction (giving its seq back) with the first."""

    def __init__(self, first: PublishedEvent) -> None:
        super().__init__("already stored")
        self.first = first


def _event_store(
    *,
    wedding_id: int,
    seq: int,
    event_type: EventType,
    data: dict[str, Any],
    sender: Member | None,
    roles: list[str],
    members: list[int],
    priority: Priority | None,
    idempotency_key: str | None,
    sender_view: dict[str, Any] | None = None,
) -> Event:
    return Event.objects.create(
        wedding_id=wedding_id,
        seq=seq,
        type=event_type.value,
        priority=(priority or DEFAULT_PRIORITY[event_type]).value,
        sender_member=sender,
        sender=_sender_view(sender) if sender else (sender_view or {}),
        audience_roles=roles,
        audience_members=members,
        data=data,
        idempotency_key=idempotency_key if sender is not None else None,
    )


def _refuse(
    *, member: Member, code: ErrorCode, message: str, event_type: str, client: ClientInfo | None
) -> PublishRefused:
    if code == "forbidden":
        audit_record(
            action=AuditAction.PUBLISH_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=member.user,
            wedding_id=member.wedding_id,
            target=f"type:{event_type}"[:200],
            client=client,
            details={"member": member.pk, "role": member.role, "reason": message},
        )
    return PublishRefused(code=code, message=message)


def _may_publish(*, member: Member, event_type: EventType, data: dict[str, Any]) -> bool:
    role = member.role
    if event_type is EventType.VENDOR_STATUS:
        if role in (Role.PLANNER, Role.COUPLE):
            return True
        return Role(role).is_vendor and data.get("member") in (None, member.pk)
    permission = PUBLISH_PERMISSION[event_type]
    return permission is not None and role_has_permission(role=role, permission=permission)


def member_event_publish(
    *,
    member: Member,
    type_name: str,
    data: dict[str, Any],
    to: list[str] | None = None,
    priority_name: str | None = None,
    idempotency_key: str | None = None,
    client: ClientInfo | None = None,
) -> PublishedEvent:
    """A member's ``publish``: checks type, data, permission and ``to``, then :func:`event_publish`.

    Raises :class:`PublishRefused` (``invalid``, ``forbidden``, ``rate_limited``) with the reason;
    refusals of permission are audited, and a gate's refusals by the gate. A type with a publish
    gate (realtime.services.publish_hooks; presence's ``emergency.alert`` opens or updates an
    emergency) is stored with what the gate records in one transaction, and while a reach widening
    holds (an open emergency) a vendor's ``to`` may reach the whole wedding (audited; decision 0011).
    """
    try:
        event_type = EventType(type_name)
    except ValueError:
        raise PublishRefused(code="invalid", message=f"type: unknown event type {type_name[:64]!r}") from None
    if event_type in RETIRED_CLIENT_TYPES:
        raise PublishRefused(
            code="invalid",
            message=f"type: {event_type} is no longer published by clients; change the record with the sync op "
            "and the server sends record.updated (docs/protocol.md section 7)",
        )
    if event_type in SERVER_ONLY_TYPES:
        raise _refuse(
            member=member,
            code="forbidden",
            message=f"{event_type} is sent by the server only",
            event_type=event_type,
            client=client,
        )
    try:
        data = event_data_validate(event_type, data)
    except FrameError as exc:
        raise PublishRefused(code="invalid", message=exc.message) from None
    if not _may_publish(member=member, event_type=event_type, data=data):
        raise _refuse(
            member=member,
            code="forbidden",
            message=f"a {member.role} may not publish {event_type} here",
            event_type=event_type,
            client=client,
        )
    priority = DEFAULT_PRIORITY[event_type]
    if priority_name is not None and Priority.from_wire(priority_name) != priority:
        # Clients choose among low/normal/high; critical is the server's and emergency the alert's.
        if priority >= Priority.CRITICAL or Priority.from_wire(priority_name) >= Priority.CRITICAL:
            raise PublishRefused(code="invalid", message=f"priority: {priority_name} is not allowed for {event_type}")
        priority = Priority.from_wire(priority_name)
    publish = _MemberPublish(
        member=member,
        event_type=event_type,
        data=data,
        to=to,
        audience=audience_default(event_type=event_type, wedding_id=member.wedding_id, sender=member, data=data),
        priority=priority,
        idempotency_key=idempotency_key,
        client=client,
    )
    gate = publish_gate(event_type=event_type)
    if gate is not None:
        return _gated_publish(publish=publish, gate=gate)
    # A vendor's reach is decided under the stream lock, in the event's own transaction; any other
    # publish is event_publish's transaction alone (no savepoint on the hot path).
    joint = to is not None and member.is_vendor
    with transaction.atomic() if joint else contextlib.nullcontext():
        return _member_event_store(publish=publish)


@dataclass(frozen=True, slots=True)
class _MemberPublish:
    """A member's publish, checked, on its way to the log."""

    member: Member
    event_type: EventType
    data: dict[str, Any]
    to: list[str] | None
    audience: Audience  # the type's default, before ``to``
    priority: Priority
    idempotency_key: str | None
    client: ClientInfo | None


def _member_event_store(*, publish: _MemberPublish) -> PublishedEvent:
    member, audience, widened = publish.member, publish.audience, None
    if publish.to is not None:
        try:
            audience, widened = _audience_to(member=member, default=audience, to=publish.to)
        except AudienceError as exc:
            raise PublishRefused(code="invalid", message=str(exc)) from None
    published = event_publish(
        wedding_id=member.wedding_id,
        event_type=publish.event_type,
        data=publish.data,
        sender=member,
        audience=audience,
        priority=publish.priority,
        idempotency_key=publish.idempotency_key,
    )
    if widened is not None and not published.duplicate:
        _widening_audit(
            member=member, event_type=publish.event_type, seq=published.seq, widened=widened, client=publish.client
        )
    return published


def _gated_publish(*, publish: _MemberPublish, gate: PublishGate) -> PublishedEvent:
    """A publish of a type another app admits (the ``emergency.alert``: never rate limited), stored
    with what the gate records in one transaction. Under the stream lock the gate admits it (and
    may change its data) or refuses it (``rate_limited`` past a member's cap of new emergencies,
    decision 0011); a refusal is audited by the gate once the refused transaction is gone."""
    member, key = publish.member, publish.idempotency_key
    try:
        with transaction.atomic():
            wedding_stream_lock(wedding_id=member.wedding_id)
            if key is not None:  # a retry is answered with what it stored, whatever came since
                first = event_for_idempotency_key(sender=member, idempotency_key=key)
                if first is not None:
                    return first
            try:
                admission = gate.admit(member=member)
            except PublishRefused as refused:
                raise _GateRefused(refused) from None  # rolls the transaction back before the audit
            published = _member_event_store(publish=replace(publish, data=admission.event_data(publish.data)))
            admission.record(event_id=published.id, sender=member)
    except _GateRefused as gated:
        gate.refusal_audit(member=member, refused=gated.refused, client=publish.client)
        raise gated.refused from None
    return published


class _GateRefused(Exception):
    """A gate's refusal on its way out of the transaction: only the gate's own refusals are its to audit."""

    def __init__(self, refused: PublishRefused) -> None:
        super().__init__(refused.message)
        self.refused = refused


@dataclass(frozen=True, slots=True)
class _Widened:
    """A vendor's ``to`` honoured past the type's audience because emergencies were open."""

    default: Audience
    reached: Audience
    emergencies: list[int]


def _audience_to(*, member: Member, default: Audience, to: list[str]) -> tuple[Audience, _Widened | None]:
    """The audience ``to`` asks for: narrowed to the type's default, except that in emergency mode a
    vendor may name anyone in the wedding (issue 5 part 7)."""
    narrowed = audience_narrow(default=default, to=to, wedding_id=member.wedding_id)
    if member.is_vendor:
        wide = audience_narrow(default=EVERYONE, to=to, wedding_id=member.wedding_id)
        if wide != narrowed:
            # Decided under the stream lock that resolving an emergency takes first: this event is
            # stored either before emergency.resolved (widened) or after it (not).
            wedding_stream_lock(wedding_id=member.wedding_id)
            emergencies = reach_widening_reasons(wedding_id=member.wedding_id)
            if emergencies:
                return wide.with_member(member.pk), _Widened(default=default, reached=wide, emergencies=emergencies)
    return narrowed.with_member(member.pk), None


def _widening_audit(
    *, member: Member, event_type: EventType, seq: int, widened: _Widened, client: ClientInfo | None
) -> None:
    roles, members = widened.reached.as_stored()
    default_roles, default_members = widened.default.as_stored()
    audit_record(
        action=AuditAction.EMERGENCY_PUBLISH_WIDEN,
        outcome=AuditOutcome.SUCCESS,
        actor=member.user,
        wedding_id=member.wedding_id,
        target=f"event:{seq}",
        client=client,
        details={
            "member": member.pk,
            "role": member.role,
            "type": event_type.value,
            "seq": seq,
            "roles": roles,
            "members": members,
            "default_roles": default_roles,
            "default_members": default_members,
            "emergencies": widened.emergencies,
        },
    )
