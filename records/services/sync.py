"""The sync engine's writes: every change of a shared record goes through here, from a socket's ``sync``, the
REST API and the admin alike (PROTOCOL.md section 7, docs/decisions/0027).

One change is one transaction: the wedding's stream row is locked first (it orders every change and
every event of the wedding, and makes the op-id check race-free), then the record; the base version
is compared, a stale edit resolved by the kind's strategy, the record written with its version
bumped, the revision kept, and the events stored in the log, fanned out after commit.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from monitoring.metrics import RECORD_SYNC_OUTCOMES
from realtime.names import EventType
from realtime.services.events import wedding_stream_lock
from records.models import (
    Conflict,
    ConflictResolution,
    ConflictStatus,
    RecordRevision,
    RecordTombstone,
)
from records.registry import Actor, RecordInvalid, RecordKind, record_kind
from records.services.notify import actor_reach, actor_view, emit, lost_notice, members_reach, notices
from records.services.ops import (
    DELETED,
    MAX_BATCH_OPS,
    SyncRefused,
    SyncRequest,
    SyncResult,
    audited,
    changes_checked,
    deleted_refusal,
    one_row,
    op_result_keep,
    op_result_kept,
    record_strategy,
    refuse_forbidden,
    reply_for,
    wire_value,
)
from records.strategies import Outcome, Resolution, Revision, resolve
from wedsync.services.audit import ClientInfo


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


def _create(*, kind: RecordKind, actor: Actor, request: SyncRequest, client: ClientInfo | None) -> SyncResult:
    if request.base_version is not None:
        raise SyncRefused(code="invalid", message="base_version: a new record has no base version (send null)")
    if request.delete:
        raise SyncRefused(code="invalid", message="delete: name the record to delete with id")
    changes = changes_checked(kind, request.changes, creating=True)
    refusal = kind.edit_refusal(actor, None, changes, False)
    if refusal is not None:
        raise refuse_forbidden(actor=actor, kind=kind, record_id=None, reason=refusal, client=client)
    try:
        record = kind.new(actor, changes)
    except RecordInvalid as exc:
        raise SyncRefused(code="invalid", message=str(exc)) from None
    _save(kind, actor, record, changes)
    values = kind.values_of(record)
    _revision_keep(kind=kind, actor=actor, record_id=record.pk, version=record.version, fields=list(values))
    published = emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_CREATED,
        reach=kind.reach_of(record) | actor_reach(actor),
        data={
            "record": kind.name,
            "id": record.pk,
            "version": record.version,
            "values": values,
            "changed": sorted(values),
            "outcome": Outcome.APPLIED,
            "op_id": request.op_id,
            "actor": actor_view(actor),
        },
    )
    reply = reply_for(
        kind=kind,
        actor=actor,
        outcome=Outcome.APPLIED,
        record_id=record.pk,
        version=record.version,
        values=values,
        op_id=request.op_id,
        seq=max(event.seq for event in published),
    )
    return op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def change_apply(*, kind: RecordKind, actor: Actor, request: SyncRequest, client: ClientInfo | None) -> SyncResult:
    record_id = request.record_id
    if record_id is None:
        raise SyncRefused(code="invalid", message="id: name the record to change")
    record = one_row(kind.queryset(wedding_id=actor.wedding_id).select_for_update(of=("self",)).filter(pk=record_id))
    if record is None:
        raise deleted_refusal(kind, wedding_id=actor.wedding_id, record_id=record_id)
    if not kind.may_view(actor, record):
        raise refuse_forbidden(
            actor=actor,
            kind=kind,
            record_id=record_id,
            reason=f"you may not see {kind.name} {record_id}",
            client=client,
        )
    changes = {} if request.delete else changes_checked(kind, request.changes, creating=False)
    if not request.delete and not changes:
        raise SyncRefused(code="invalid", message="changes: change at least one field (or delete: true)")
    refusal = kind.edit_refusal(actor, record, changes, request.delete)
    if refusal is not None:
        raise refuse_forbidden(actor=actor, kind=kind, record_id=record_id, reason=refusal, client=client)
    if request.base_version is None:
        raise SyncRefused(code="invalid", message="base_version: the version your change is based on is required")
    if request.base_version > record.version:
        raise SyncRefused(
            code="invalid", message=f"base_version: {request.base_version} is newer than the record ({record.version})"
        )
    current = kind.values_of(record)
    since_base, complete = _since_base(kind, record_id, request.base_version, record.version)
    wire = {name: wire_value(value) for name, value in changes.items()}
    # A strategy decides only between this edit and others' changes since its base (resolve drops the
    # author's own); without any, the wedding's choice need not be read.
    by_others = any(actor.member_id is None or rev.member_id != actor.member_id for rev in since_base)
    strategy = record_strategy(wedding_id=actor.wedding_id, kind=kind) if by_others else kind.default_strategy.value
    resolution = resolve(
        strategy=strategy,
        changes=dict.fromkeys(kind.fields, DELETED) if request.delete else wire,
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
        reply = reply_for(
            kind=kind,
            actor=actor,
            outcome=resolution.outcome,
            record_id=record_id,
            version=record.version,
            values=current,
            op_id=request.op_id,
            changed=[],
        )
        return op_result_keep(actor=actor, op_id=request.op_id, reply=reply)
    reach_before = kind.reach_of(record)
    record.version += 1
    _save(kind, actor, record, applied)
    values = kind.values_of(record)
    changed = sorted(applied)
    _revision_keep(kind=kind, actor=actor, record_id=record_id, version=record.version, fields=changed)
    published = emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_UPDATED,
        reach=reach_before | kind.reach_of(record) | actor_reach(actor),
        data={
            "record": kind.name,
            "id": record_id,
            "version": record.version,
            "values": values,
            "changed": changed,
            "outcome": resolution.outcome,
            "op_id": request.op_id,
            "actor": actor_view(actor),
        },
    )
    notices(
        kind=kind,
        actor=actor,
        record_id=record_id,
        version=record.version,
        values=values,
        wire=wire,
        resolution=resolution,
    )
    reply = reply_for(
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
    return op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


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
    lost_notice(
        kind=kind, actor=actor, record_id=record.pk, version=record.version, values=current, wire=wire, lost=lost
    )
    reply = reply_for(
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
    return op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def _delete(*, kind: RecordKind, actor: Actor, request: SyncRequest, record: Any, resolution: Resolution) -> SyncResult:
    record_id, version = record.pk, record.version + 1
    reach = kind.reach_of(record) | actor_reach(actor)
    published = emit(
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
            "actor": actor_view(actor),
        },
    )
    seq = min(event.seq for event in published)
    notices(kind=kind, actor=actor, record_id=record_id, version=version, values=None, wire={}, resolution=resolution)
    record.delete()
    RecordTombstone.objects.create(
        wedding_id=actor.wedding_id, kind=kind.name, record_id=record_id, version=version, seq=seq
    )
    Conflict.objects.filter(kind=kind.name, record_id=record_id, status=ConflictStatus.OPEN).update(
        status=ConflictStatus.RESOLVED, resolution=ConflictResolution.THEIRS, resolved_at=timezone.now()
    )
    reply = reply_for(
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
    return op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


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
    emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_CONFLICT,
        reach=kind.reach_of(record) | actor_reach(actor) | members_reach(set(against), wedding_id=actor.wedding_id),
        data={
            "record": kind.name,
            "id": record.pk,
            "version": record.version,
            "reason": "conflict",
            "conflict": conflict.pk,
            "fields": contested,
            "yours": mine,
            "current": conflict.theirs,
            "by": actor_view(actor),
        },
    )
    reply = reply_for(
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
    return op_result_keep(actor=actor, op_id=request.op_id, reply=reply)


def _sync_one(*, actor: Actor, request: SyncRequest, client: ClientInfo | None) -> SyncResult:
    kind = record_kind(request.kind)
    if kind is None:
        raise SyncRefused(code="invalid", message=f"record: unknown record kind {request.kind[:40]!r}")
    kept = op_result_kept(actor=actor, op_id=request.op_id)
    if kept is not None:
        return kept
    if request.record_id is None:
        return _create(kind=kind, actor=actor, request=request, client=client)
    return change_apply(kind=kind, actor=actor, request=request, client=client)


def record_sync(*, actor: Actor, request: SyncRequest, client: ClientInfo | None = None) -> SyncResult:
    """Apply one op in its own transaction; raises :class:`SyncRefused` (nothing written) when it
    cannot be applied. A stale edit is resolved, never refused: the result says how."""
    try:
        with audited(), transaction.atomic():
            wedding_stream_lock(wedding_id=actor.wedding_id)
            result = _sync_one(actor=actor, request=request, client=client)
    except SyncRefused as refused:
        _outcomes_count([], refused=refused)
        raise
    _outcomes_count([result])
    return result


def records_sync_batch(
    *, actor: Actor, requests: list[SyncRequest], client: ClientInfo | None = None
) -> list[SyncResult]:
    """All ops or none, in one transaction. An op refused, or one that would not fully apply
    (``overridden`` or ``conflict``), rolls every op back, so nothing is stored or emitted, and
    raises :class:`SyncRefused` naming the op (``op``: its index)."""
    try:
        results = _batch_apply(actor=actor, requests=requests, client=client)
    except SyncRefused as refused:
        _outcomes_count([], refused=refused)
        raise
    _outcomes_count(results)
    return results


def _outcomes_count(results: list[SyncResult], *, refused: SyncRefused | None = None) -> None:
    """After the transaction: what each op came to (a refused batch counts once, as its refusal)."""
    if refused is not None:
        RECORD_SYNC_OUTCOMES.labels("conflict" if refused.code == "conflict" else "refused").inc()
    for result in results:
        RECORD_SYNC_OUTCOMES.labels("duplicate" if result.duplicate else result.outcome).inc()


def _batch_apply(*, actor: Actor, requests: list[SyncRequest], client: ClientInfo | None) -> list[SyncResult]:
    if not 1 <= len(requests) <= MAX_BATCH_OPS:
        raise SyncRefused(code="invalid", message=f"ops: between 1 and {MAX_BATCH_OPS} ops")
    op_ids = [request.op_id for request in requests if request.op_id is not None]
    if len(op_ids) != len(set(op_ids)):
        raise SyncRefused(code="invalid", message="ops: every op needs its own op_id")
    with audited(), transaction.atomic():
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
