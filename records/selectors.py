"""Reading shared records as a caller may see them: the state snapshot a client reloads from, and
the records and conflicts of the REST API (docs/protocol.md section 7)."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction

from realtime.selectors import stream_head
from records.models import Conflict, ConflictStatus
from records.registry import Actor, RecordKind, kinds
from wedsync.permissions import Permission


def record_view(*, kind: RecordKind, actor: Actor, record: Any) -> dict[str, Any]:
    """One record as ``actor`` sees it: id, version and the fields their role may see."""
    return {
        "id": record.pk,
        "version": record.version,
        "values": kind.visible_values(kind.values_of(record), role=actor.role),
    }


def records_visible(*, kind: RecordKind, actor: Actor) -> list[dict[str, Any]]:
    queryset = kind.queryset(wedding_id=actor.wedding_id).order_by("pk")
    if kind.name == "timeline_item":
        queryset = queryset.prefetch_related("assigned_vendors")
    return [record_view(kind=kind, actor=actor, record=record) for record in queryset if kind.may_view(actor, record)]


def conflicts_visible(*, actor: Actor, status: str | None = ConflictStatus.OPEN) -> list[Conflict]:
    """The conflicts a resolver may list: all of the wedding's for roles that resolve them (and
    staff), else only those the caller submitted or whose changes are contested."""
    conflicts = Conflict.objects.filter(wedding_id=actor.wedding_id)
    if status is not None:
        conflicts = conflicts.filter(status=status)
    if actor.may(Permission.MANAGE_MEMBERS):
        return list(conflicts)
    return [c for c in conflicts if c.member_id == actor.member_id or actor.member_id in (c.against or [])]


def wedding_state(*, actor: Actor) -> dict[str, Any]:
    """Every record the caller may see, with the wedding's ``seq`` and ``epoch``, read in one
    snapshot (REPEATABLE READ): a client that reloads this and subscribes ``since`` that seq gets
    every later change once, and none it already has."""
    stream_head(wedding_id=actor.wedding_id)  # creates the stream of a wedding with no events yet
    outermost = not connection.in_atomic_block  # inside another transaction, that one's snapshot rules
    with transaction.atomic():
        # SQLite (the embedded `make run`) has one writer and serializable transactions already.
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        seq, epoch = stream_head(wedding_id=actor.wedding_id)
        records = {kind.name: records_visible(kind=kind, actor=actor) for kind in kinds()}
    return {"wedding": actor.wedding_id, "seq": seq, "epoch": epoch, "records": records}
