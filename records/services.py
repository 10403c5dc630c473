"""The sync engine: every change of a shared record goes through here, from a socket's ``sync``, the
REST API and the admin alike (PROTOCOL.md section 7, docs/decisions/0027).

One change is one transaction: the wedding's stream row is locked first (it orders every change and
every event of the wedding, and makes the op-id check race-free), then the record; the base version
is compared, a stale edit resolved by the kind's strategy, the record written with its version
bumped, the revision kept, and the events stored in the log, fanned out after commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from realtime.audience import Audience
from realtime.limits.publish_rate import publish_rate_check
from realtime.names import EventType
from realtime.selectors import member_for_publish
from realtime.services.events import PublishedEvent, event_publish, wedding_stream_lock
from records.models import (
    Conflict,
    ConflictResolution,
    ConflictStatus,
    RecordRevision,
    RecordTombstone,
    SyncOpResult,
    WeddingStrategy,
)
from records.registry import Actor, Reach, RecordInvalid, RecordKind, record_kind
from records.strategies import Outcome, Resolution, Revision, resolve
from wedsync.models import AuditOutcome, Member
from wedsync.permissions import Permission, Role, role_has_permission
from wedsync.refusals import ErrorCode, Refused
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

MAX_BATCH_OPS = 50
_TIMES = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC) - timedelta(microseconds=1))
_DELETED = object()  # what a deletion "writes" into every field, for the strategies


class SyncRefused(Refused):
    """An op that cannot be applied; ``details`` go into the error (``op``: its index in a batch,
    ``deleted_seq``: the seq that deleted the record)."""

    def __init__(self, *, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(code=code, message=message)
        self.details = details
        self.audit: dict[str, Any] | None = None  # an entry still to write (see _audited)


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """One op: create (``record_id`` None), change, or delete one record."""

    kind: str
    record_id: int | None
    base_version: int | None
    changes: dict[str, Any]
    delete: bool = False
    op_id: str | None = None


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The answer to one op, as the reply's ``data`` (and as kept for a resent op id)."""

    reply: dict[str, Any]
    duplicate: bool = False  # a resent op id: the first answer, nothing changed

    @property
    def outcome(self) -> str:
        value: str = self.reply["outcome"]
        return value


def _wire(value: Any) -> Any:
    """A change's value as the records' values show it (datetimes in UTC, ISO 8601, ``Z``)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return sorted(value)
    return value


def _changes_checked(kind: RecordKind, raw: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    try:
        checked = msgspec.convert(raw, kind.changes)
    except msgspec.ValidationError as exc:
        raise SyncRefused(code="invalid", message=f"changes: {exc}") from None
    changes = {name: getattr(checked, name) for name in checked.__struct_fields__}
    changes = {name: value for name, value in changes.items() if value is not msgspec.UNSET}
    for name, value in changes.items():
        # Python cannot turn year 1 at +01:00 or year 9999 at -01:00 into UTC, which every time goes through.
        if isinstance(value, datetime) and not _TIMES[0] <= value <= _TIMES[1]:
            raise SyncRefused(code="invalid", message=f"changes: {name} must fall between 1900 and 2199")
    if not creating:
        late = sorted(set(changes) & kind.create_only)
        if late:
            raise SyncRefused(code="invalid", message=f"changes: {late[0]} is set when the record is created only")
    return changes


def _one(queryset: QuerySet[Any]) -> Any:
    """The row a lookup by a unique key finds, or None; ``first()`` would add the model's ORDER BY,
    compiled and sorted for nothing on a single row."""
    return next(iter(queryset.order_by()[:1]), None)


def record_strategy(*, wedding_id: int, kind: RecordKind) -> str:
    chosen = WeddingStrategy.objects.filter(wedding_id=wedding_id, kind=kind.name).values_list("strategy", flat=True)
    return _one(chosen) or kind.default_strategy.value


def _refuse_forbidden(
    *, actor: Actor, kind: RecordKind, record_id: int | None, reason: str, client: ClientInfo | None
) -> SyncRefused:
    """A ``forbidden`` refusal whose audit entry is written once the refused transaction is gone
    (:func:`_audited`): written inside it, the rollback would take the entry too."""
    refused = SyncRefused(code="forbidden", message=reason)
    refused.audit = {
        "actor": actor.user,
        "wedding_id": actor.wedding_id,
        "target": f"{kind.name}:{record_id if record_id is not None else 'new'}",
        "client": client,
        "details": {"member": actor.member_id, "role": actor.role, "reason": reason},
    }
    return refused


@contextlib.contextmanager
def _audited() -> Iterator[None]:
    """Around a change's transaction: the audit entry of a refusal raised in it, after the rollback."""
    try:
        yield
    except SyncRefused as refused:
        if refused.audit is not None:
            audit_record(action=AuditAction.RECORD_REFUSE, outcome=AuditOutcome.REFUSED, **refused.audit)
            refused.audit = None
        raise


# --- events ------------------------------------------------------------------------------------------


def _actor_view(actor: Actor) -> dict[str, Any]:
    return {"member": actor.member_id, "role": actor.role, "staff": actor.member is None}


def _split(kind: RecordKind, reach: Reach) -> list[tuple[frozenset[str] | None, Audience]]:
    """The reach split by which hidden fields each part may see: (the hidden fields withheld, or
    None for none, and the audience). A kind with no hidden fields is one part."""
    if not kind.hidden:
        return [(None, Audience.of(roles=reach.roles, members=reach.members))]
    parts: dict[frozenset[str], tuple[set[str], set[int]]] = {}

    def withheld(role: str) -> frozenset[str]:
        return frozenset(
            name for name, perm in kind.hidden.items() if not role_has_permission(role=role, permission=perm)
        )

    for role in reach.roles:
        parts.setdefault(withheld(role), (set(), set()))[0].add(role)
    for member_id, role in reach.members.items():
        if role not in reach.roles:
            parts.setdefault(withheld(role), (set(), set()))[1].add(member_id)
    return [
        (hidden or None, Audience.of(roles=roles, members=members))
        for hidden, (roles, members) in sorted(parts.items(), key=lambda part: sorted(part[0]))
    ]


def _emit(
    *,
    kind: RecordKind,
    actor: Actor,
    event_type: EventType,
    reach: Reach,
    data: dict[str, Any],
) -> list[PublishedEvent]:
    """Store the event once per part of the reach that sees different fields (decision 0027), each
    part's data without the fields it may not see; fanned out after commit by the event log."""
    published = []
    for hidden, audience in _split(kind, reach):
        shown = data if hidden is None else _withhold(data, hidden)
        published.append(
            event_publish(
                wedding_id=actor.wedding_id,
                event_type=event_type,
                data=shown,
                sender=actor.member,
                audience=audience,
            )
        )
    return published


def _withhold(data: dict[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    shown = dict(data)
    for key in ("values", "yours", "current"):
        if isinstance(shown.get(key), dict):
            shown[key] = {name: value for name, value in shown[key].items() if name not in hidden}
    for key in ("changed", "fields", "lost"):
        if isinstance(shown.get(key), list):
            shown[key] = [name for name in shown[key] if name not in hidden]
    return shown


def _actor_reach(actor: Actor) -> Reach:
    """The author's other devices see what they did."""
    return Reach(roles=frozenset(), members={} if actor.member is None else {actor.member.pk: actor.role})


def _members_reach(member_ids: set[int], *, wedding_id: int) -> Reach:
    return Reach(
        roles=frozenset(),
        members=dict(Member.objects.filter(wedding_id=wedding_id, pk__in=member_ids).values_list("pk", "role")),
    )


# --- one op --------------------------------------------------------------------------------------------


def _since_base(
    kind: RecordKind, record_id: int, base_version: int, current_version: int
) -> tuple[list[Revision], bool]:
    if base_version == current_version:
        return [], True  # no version is newer than the current one: most edits need no read
    rows = list(
        RecordRevision.objects.filter(kind=kind.name, record_id=record_id, version__gt=base_version)
        .order_by("version")
        .values_list("version", "fields", "rank", "member_id")
    )
    revisions = [Revision(version=v, fields=frozenset(f), rank=r, member_id=m) for v, f, r, m in rows]
    return revisions, len(revisions) == current_version - base_version


def _revision_keep(*, kind: RecordKind, actor: Actor, record_id: int, version: int, fields: list[str]) -> None:
    RecordRevision.objects.create(
        wedding_id=actor.wedding_id,
        kind=kind.name,
        record_id=record_id,
        version=version,
        fields=sorted(fields),
        rank=actor.rank,
        member=actor.member,
        user=actor.user,
    )


def _save(kind: RecordKind, actor: Actor, record: Any, changes: dict[str, Any]) -> None:
    try:
        m2m = kind.apply(actor, record, changes)
    except RecordInvalid as exc:
        raise SyncRefused(code="invalid", message=str(exc)) from None
    record.save()
    for name in m2m:
        getattr(record, name).set(changes[name])


def _op_result_kept(*, actor: Actor, op_id: str | None) -> SyncResult | None:
    if op_id is None:
        return None
    kept = SyncOpResult.objects.filter(user=actor.user, wedding_id=actor.wedding_id, op_id=op_id).values_list(
        "result", flat=True
    )
    first = _one(kept)
    return None if first is None else SyncResult(reply=first, duplicate=True)


def _op_result_keep(*, actor: Actor, op_id: str | None, reply: dict[str, Any]) -> SyncResult:
    if op_id is not None:
        SyncOpResult.objects.create(user=actor.user, wedding_id=actor.wedding_id, op_id=op_id, result=reply)
    return SyncResult(reply=reply)


def _reply(
    *,
    kind: RecordKind,
    actor: Actor,
    outcome: str,
    record_id: int,
    version: int,
    values: dict[str, Any] | None,
    op_id: str | None,
    **extra: Any,
) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "outcome": outcome,
        "record": kind.name,
        "id": record_id,
        "version": version,
        "op_id": op_id,
    }
    if values is not None:
        reply["values"] = kind.visible_values(values, role=actor.role)
    reply.update(extra)
    for key in ("changed", "lost"):  # field names too, as the events withhold them
        if isinstance(reply.get(key), list):
            reply[key] = [name for name in reply[key] if name in kind.visible_values({name: None}, role=actor.role)]
    return reply


def _create(*, kind: RecordKind, actor: Actor, request: SyncRequest, client: ClientInfo | None) -> SyncResult:
    if request.base_version is not None:
        raise SyncRefused(code="invalid", message="base_version: a new record has no base version (send null)")
    if request.delete:
        raise SyncRefused(code="invalid", message="delete: name the record to delete with id")
    changes = _changes_checked(kind, request.changes, creating=True)
    refusal = kind.edit_refusal(actor, None, changes, False)
    if refusal is not None:
        raise _refuse_forbidden(actor=actor, kind=kind, record_id=None, reason=refusal, client=client)
    try:
        record = kind.new(actor, changes)
    except RecordInvalid as exc:
        raise SyncRefused(code="invalid", message=str(exc)) from None
    _save(kind, actor, record, changes)
    values = kind.values_of(record)
    _revision_keep(kind=kind, actor=actor, record_id=record.pk, version=record.version, fields=list(values))
    published = _emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_CREATED,
        reach=kind.reach_of(record) | _actor_reach(actor),
        data={
            "record": kind.name,
            "id": record.pk,
            "version": record.version,
            "values": values,
            "changed": sorted(values),
            "outcome": Outcome.APPLIED,
            "op_id": request.op_id,
            "actor": _actor_view(actor),
        },
    )
    reply = _reply(
        kind=kind,
        actor=actor,
        outcome=Outcome.APPLIED,
        record_id=record.pk,
        version=record.version,
        values=values,
        op_id=request.op_id,
        seq=max(event.seq for event in published),
    )
    return _op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def _deleted_refusal(kind: RecordKind, *, wedding_id: int, record_id: int) -> SyncRefused:
    tombstone = (
        RecordTombstone.objects.filter(kind=kind.name, record_id=record_id, wedding_id=wedding_id)
        .values_list("seq", flat=True)
        .first()
    )
    if tombstone is not None:
        return SyncRefused(
            code="not_found", message=f"{kind.name} {record_id} was deleted (seq {tombstone}).", deleted_seq=tombstone
        )
    return SyncRefused(code="not_found", message=f"There is no {kind.name} {record_id} in this wedding.")


def _change(*, kind: RecordKind, actor: Actor, request: SyncRequest, client: ClientInfo | None) -> SyncResult:
    record_id = request.record_id
    if record_id is None:
        raise SyncRefused(code="invalid", message="id: name the record to change")
    record = _one(kind.queryset(wedding_id=actor.wedding_id).select_for_update(of=("self",)).filter(pk=record_id))
    if record is None:
        raise _deleted_refusal(kind, wedding_id=actor.wedding_id, record_id=record_id)
    if not kind.may_view(actor, record):
        raise _refuse_forbidden(
            actor=actor,
            kind=kind,
            record_id=record_id,
            reason=f"you may not see {kind.name} {record_id}",
            client=client,
        )
    changes = {} if request.delete else _changes_checked(kind, request.changes, creating=False)
    if not request.delete and not changes:
        raise SyncRefused(code="invalid", message="changes: change at least one field (or delete: true)")
    refusal = kind.edit_refusal(actor, record, changes, request.delete)
    if refusal is not None:
        raise _refuse_forbidden(actor=actor, kind=kind, record_id=record_id, reason=refusal, client=client)
    if request.base_version is None:
        raise SyncRefused(code="invalid", message="base_version: the version your change is based on is required")
    if request.base_version > record.version:
        raise SyncRefused(
            code="invalid", message=f"base_version: {request.base_version} is newer than the record ({record.version})"
        )
    current = kind.values_of(record)
    since_base, complete = _since_base(kind, record_id, request.base_version, record.version)
    wire = {name: _wire(value) for name, value in changes.items()}
    # A strategy decides only between this edit and others' changes since its base (resolve drops the
    # author's own); without any, the wedding's choice need not be read.
    by_others = any(actor.member_id is None or rev.member_id != actor.member_id for rev in since_base)
    strategy = record_strategy(wedding_id=actor.wedding_id, kind=kind) if by_others else kind.default_strategy.value
    resolution = resolve(
        strategy=strategy,
        changes=dict.fromkeys(kind.fields, _DELETED) if request.delete else wire,
        current=current,
        since_base=since_base,
        rank=actor.rank,
        author=actor.member_id,
        history_complete=complete,
    )
    if resolution.outcome == Outcome.CONFLICT:
        return _conflict_keep(
            kind=kind,
            actor=actor,
            request=request,
            record=record,
            current=current,
            wire=wire,
            resolution=resolution,
            strategy=strategy,
            since_base=since_base,
        )
    if request.delete:
        if resolution.lost:
            return _overridden(
                kind=kind,
                actor=actor,
                request=request,
                record=record,
                current=current,
                lost=frozenset(kind.fields),
                wire={},
            )
        return _delete(kind=kind, actor=actor, request=request, record=record, resolution=resolution)
    applied = {name: changes[name] for name in resolution.apply if current.get(name) != wire[name]}
    if not applied:
        if resolution.lost:
            return _overridden(
                kind=kind, actor=actor, request=request, record=record, current=current, lost=resolution.lost, wire=wire
            )
        reply = _reply(
            kind=kind,
            actor=actor,
            outcome=resolution.outcome,
            record_id=record_id,
            version=record.version,
            values=current,
            op_id=request.op_id,
            changed=[],
        )
        return _op_result_keep(actor=actor, op_id=request.op_id, reply=reply)
    reach_before = kind.reach_of(record)
    record.version += 1
    _save(kind, actor, record, applied)
    values = kind.values_of(record)
    changed = sorted(applied)
    _revision_keep(kind=kind, actor=actor, record_id=record_id, version=record.version, fields=changed)
    published = _emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_UPDATED,
        reach=reach_before | kind.reach_of(record) | _actor_reach(actor),
        data={
            "record": kind.name,
            "id": record_id,
            "version": record.version,
            "values": values,
            "changed": changed,
            "outcome": resolution.outcome,
            "op_id": request.op_id,
            "actor": _actor_view(actor),
        },
    )
    _notices(
        kind=kind,
        actor=actor,
        record_id=record_id,
        version=record.version,
        values=values,
        wire=wire,
        resolution=resolution,
    )
    reply = _reply(
        kind=kind,
        actor=actor,
        outcome=resolution.outcome,
        record_id=record_id,
        version=record.version,
        values=values,
        op_id=request.op_id,
        changed=changed,
        lost=sorted(resolution.lost),
        seq=max(event.seq for event in published),
    )
    return _op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def _notices(
    *,
    kind: RecordKind,
    actor: Actor,
    record_id: int,
    version: int,
    values: dict[str, Any] | None,
    wire: dict[str, Any],
    resolution: Resolution,
) -> None:
    """Nobody is overwritten silently: the members whose values this edit replaced, and the author
    when part of their edit lost, each get a ``record.conflict`` notice. ``values`` None: the edit
    deleted the record."""
    for member_id, fields in sorted(resolution.overwritten.items()):
        if member_id == actor.member_id:
            continue
        data = {
            "record": kind.name,
            "id": record_id,
            "version": version,
            "reason": "overwritten",
            "conflict": None,
            "fields": sorted(fields),
            "current": {} if values is None else {name: values[name] for name in sorted(fields)},
            "by": _actor_view(actor),
        }
        if values is None:
            data["deleted"] = True
        _emit(
            kind=kind,
            actor=actor,
            event_type=EventType.RECORD_CONFLICT,
            reach=_members_reach({member_id}, wedding_id=actor.wedding_id),
            data=data,
        )
    if resolution.lost and actor.member is not None and values is not None:
        _lost_notice(
            kind=kind, actor=actor, record_id=record_id, version=version, values=values, wire=wire, lost=resolution.lost
        )


def _lost_notice(
    *,
    kind: RecordKind,
    actor: Actor,
    record_id: int,
    version: int,
    values: dict[str, Any],
    wire: dict[str, Any],
    lost: frozenset[str],
) -> None:
    _emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_CONFLICT,
        reach=_actor_reach(actor),
        data={
            "record": kind.name,
            "id": record_id,
            "version": version,
            "reason": "overridden",
            "conflict": None,
            "fields": sorted(lost),
            "yours": {name: wire[name] for name in sorted(lost) if name in wire},
            "current": {name: values[name] for name in sorted(lost) if name in values},
            "by": None,
        },
    )


def _overridden(
    *,
    kind: RecordKind,
    actor: Actor,
    request: SyncRequest,
    record: Any,
    current: dict[str, Any],
    lost: frozenset[str],
    wire: dict[str, Any],
) -> SyncResult:
    """The whole edit lost: nothing is written; the author hears why, with the winning values."""
    _lost_notice(
        kind=kind, actor=actor, record_id=record.pk, version=record.version, values=current, wire=wire, lost=lost
    )
    reply = _reply(
        kind=kind,
        actor=actor,
        outcome=Outcome.OVERRIDDEN,
        record_id=record.pk,
        version=record.version,
        values=current,
        op_id=request.op_id,
        changed=[],
        lost=sorted(lost),
    )
    return _op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def _delete(*, kind: RecordKind, actor: Actor, request: SyncRequest, record: Any, resolution: Resolution) -> SyncResult:
    record_id, version = record.pk, record.version + 1
    reach = kind.reach_of(record) | _actor_reach(actor)
    published = _emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_DELETED,
        reach=reach,
        data={
            "record": kind.name,
            "id": record_id,
            "version": version,
            "outcome": resolution.outcome,
            "op_id": request.op_id,
            "actor": _actor_view(actor),
        },
    )
    seq = min(event.seq for event in published)
    _notices(kind=kind, actor=actor, record_id=record_id, version=version, values=None, wire={}, resolution=resolution)
    record.delete()
    RecordTombstone.objects.create(
        wedding_id=actor.wedding_id, kind=kind.name, record_id=record_id, version=version, seq=seq
    )
    Conflict.objects.filter(kind=kind.name, record_id=record_id, status=ConflictStatus.OPEN).update(
        status=ConflictStatus.RESOLVED, resolution=ConflictResolution.THEIRS, resolved_at=timezone.now()
    )
    reply = _reply(
        kind=kind,
        actor=actor,
        outcome=resolution.outcome,
        record_id=record_id,
        version=version,
        values=None,
        op_id=request.op_id,
        deleted=True,
        seq=max(event.seq for event in published),
    )
    return _op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def _conflict_keep(
    *,
    kind: RecordKind,
    actor: Actor,
    request: SyncRequest,
    record: Any,
    current: dict[str, Any],
    wire: dict[str, Any],
    resolution: Resolution,
    strategy: str,
    since_base: list[Revision],
) -> SyncResult:
    against = sorted(
        {rev.member_id for rev in since_base if rev.member_id is not None and rev.member_id != actor.member_id}
    )
    mine = {"deleted": True} if request.delete else wire
    contested = sorted(resolution.contested)
    conflict = Conflict.objects.create(
        wedding_id=actor.wedding_id,
        kind=kind.name,
        record_id=record.pk,
        strategy=strategy,
        base_version=request.base_version or 0,
        version=record.version,
        theirs={name: current[name] for name in (contested if not request.delete else kind.fields)},
        mine=mine,
        member=actor.member,
        user=actor.user,
        against=against,
    )
    _emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_CONFLICT,
        reach=kind.reach_of(record) | _actor_reach(actor) | _members_reach(set(against), wedding_id=actor.wedding_id),
        data={
            "record": kind.name,
            "id": record.pk,
            "version": record.version,
            "reason": "conflict",
            "conflict": conflict.pk,
            "fields": contested,
            "yours": mine,
            "current": conflict.theirs,
            "by": _actor_view(actor),
        },
    )
    reply = _reply(
        kind=kind,
        actor=actor,
        outcome=Outcome.CONFLICT,
        record_id=record.pk,
        version=record.version,
        values=current,
        op_id=request.op_id,
        conflict=conflict.pk,
        lost=sorted(resolution.lost) if not request.delete else [],
    )
    return _op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def _sync_one(*, actor: Actor, request: SyncRequest, client: ClientInfo | None) -> SyncResult:
    kind = record_kind(request.kind)
    if kind is None:
        raise SyncRefused(code="invalid", message=f"record: unknown record kind {request.kind[:40]!r}")
    kept = _op_result_kept(actor=actor, op_id=request.op_id)
    if kept is not None:
        return kept
    if request.record_id is None:
        return _create(kind=kind, actor=actor, request=request, client=client)
    return _change(kind=kind, actor=actor, request=request, client=client)


def record_sync(*, actor: Actor, request: SyncRequest, client: ClientInfo | None = None) -> SyncResult:
    """Apply one op in its own transaction; raises :class:`SyncRefused` (nothing written) when it
    cannot be applied. A stale edit is resolved, never refused: the result says how."""
    with _audited(), transaction.atomic():
        wedding_stream_lock(wedding_id=actor.wedding_id)
        return _sync_one(actor=actor, request=request, client=client)


def records_sync_batch(
    *, actor: Actor, requests: list[SyncRequest], client: ClientInfo | None = None
) -> list[SyncResult]:
    """All ops or none, in one transaction. An op refused, or one that would not fully apply
    (``overridden`` or ``conflict``), rolls every op back, so nothing is stored or emitted, and
    raises :class:`SyncRefused` naming the op (``op``: its index)."""
    if not 1 <= len(requests) <= MAX_BATCH_OPS:
        raise SyncRefused(code="invalid", message=f"ops: between 1 and {MAX_BATCH_OPS} ops")
    op_ids = [request.op_id for request in requests if request.op_id is not None]
    if len(op_ids) != len(set(op_ids)):
        raise SyncRefused(code="invalid", message="ops: every op needs its own op_id")
    with _audited(), transaction.atomic():
        wedding_stream_lock(wedding_id=actor.wedding_id)
        results = []
        for index, request in enumerate(requests):
            try:
                result = _sync_one(actor=actor, request=request, client=client)
            except SyncRefused as refused:
                named = SyncRefused(
                    code=refused.code, message=f"ops[{index}]: {refused.message}", op=index, **refused.details
                )
                named.audit = refused.audit
                raise named from None
            if not result.duplicate and result.outcome not in (Outcome.APPLIED, Outcome.MERGED):
                raise SyncRefused(
                    code="conflict",
                    message=f"ops[{index}]: {request.kind} {request.record_id} was changed since your base "
                    f"version and your change would be {result.outcome}; nothing was applied",
                    op=index,
                    outcome=result.outcome,
                    version=result.reply["version"],
                )
            results.append(result)
    return results


# --- conflicts ---------------------------------------------------------------------------------------


def conflict_resolve(
    *,
    actor: Actor,
    conflict_id: int,
    resolution: str,
    values: dict[str, Any] | None = None,
    client: ClientInfo | None = None,
) -> tuple[Conflict, SyncResult | None]:
    """Close an open conflict: ``theirs`` keeps the record, ``mine`` applies the submitted change,
    ``custom`` applies ``values``; applied through the engine as the resolver's fresh edit, and
    everyone concerned hears ``conflict.resolved``. Only roles with ``manage_members`` (and staff)."""
    if not actor.may(Permission.MANAGE_MEMBERS):
        reason = f"a {actor.role} may not resolve conflicts"
        audit_record(
            action=AuditAction.RECORD_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=actor.user,
            wedding_id=actor.wedding_id,
            target=f"conflict:{conflict_id}",
            client=client,
            details={"member": actor.member_id, "role": actor.role, "reason": reason},
        )
        raise SyncRefused(code="forbidden", message=reason)
    if resolution not in ConflictResolution.values:
        raise SyncRefused(code="invalid", message=f"resolution: one of {', '.join(ConflictResolution.values)}")
    with _audited(), transaction.atomic():
        wedding_stream_lock(wedding_id=actor.wedding_id)
        conflict = Conflict.objects.select_for_update().filter(pk=conflict_id, wedding_id=actor.wedding_id).first()
        if conflict is None:
            raise SyncRefused(code="not_found", message=f"There is no conflict {conflict_id} in this wedding.")
        if conflict.status != ConflictStatus.OPEN:
            raise SyncRefused(code="conflict", message=f"Conflict {conflict_id} is already {conflict.status}.")
        kind = record_kind(conflict.kind)
        if kind is None:
            raise SyncRefused(code="not_found", message=f"Records of kind {conflict.kind!r} are no longer served.")
        record = kind.queryset(wedding_id=actor.wedding_id).filter(pk=conflict.record_id).first()
        if record is None:
            raise _deleted_refusal(kind, wedding_id=actor.wedding_id, record_id=conflict.record_id)
        result = None
        chosen = conflict.mine if resolution == ConflictResolution.MINE else (values or {})
        if resolution == ConflictResolution.CUSTOM and not values:
            raise SyncRefused(code="invalid", message="values: a custom resolution names the values to apply")
        if resolution != ConflictResolution.THEIRS:
            request = SyncRequest(
                kind=kind.name,
                record_id=record.pk,
                base_version=record.version,
                changes={} if chosen.get("deleted") is True else dict(chosen),
                delete=chosen.get("deleted") is True,
            )
            result = _change(kind=kind, actor=actor, request=request, client=client)
            record = kind.queryset(wedding_id=actor.wedding_id).filter(pk=conflict.record_id).first() or record
        conflict.status = ConflictStatus.RESOLVED
        conflict.resolution = resolution
        conflict.resolved_values = None if result is None else result.reply.get("values")
        conflict.resolved_by = actor.user
        conflict.resolved_at = timezone.now()
        conflict.save()
        submitter = {conflict.member_id} if conflict.member_id else set()
        _emit(
            kind=kind,
            actor=actor,
            event_type=EventType.CONFLICT_RESOLVED,
            reach=kind.reach_of(record)
            | _actor_reach(actor)
            | _members_reach(submitter | set(conflict.against), wedding_id=actor.wedding_id),
            data={
                "record": kind.name,
                "id": conflict.record_id,
                "conflict": conflict.pk,
                "resolution": resolution,
                "version": result.reply["version"] if result else record.version,
                "values": result.reply.get("values") if result else kind.values_of(record),
                "actor": _actor_view(actor),
            },
        )
        audit_record(
            action=AuditAction.CONFLICT_RESOLVE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor.user,
            wedding_id=actor.wedding_id,
            target=f"conflict:{conflict.pk}",
            client=client,
            details={"resolution": resolution, "record": f"{kind.name}:{conflict.record_id}"},
        )
    return conflict, result


# --- who acts ----------------------------------------------------------------------------------------


def actor_for_member(member: Member) -> Actor:
    return Actor(user=member.user, wedding_id=member.wedding_id, role=member.role, member=member)


def actor_for_staff(*, user: Any, wedding_id: int) -> Actor:
    """Staff who oversee a wedding act with a planner's view and rank, as no member."""
    return Actor(user=user, wedding_id=wedding_id, role=Role.PLANNER.value, member=None)


def socket_records_sync(
    *, user_id: int, wedding_id: int, requests: list[SyncRequest], atomic: bool, client: ClientInfo
) -> list[SyncResult]:
    """A socket's ``sync``: as the user's current active member (a role may have changed since the
    socket subscribed), through :func:`records_sync_submit`."""
    member = member_for_publish(user_id=user_id, wedding_id=wedding_id)
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
    kept = [_op_result_kept(actor=actor, op_id=request.op_id) for request in requests]
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
