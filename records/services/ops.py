"""What every op of the sync engine shares: the request and result types, the refusal and its
audit after rollback, the checked changes, the kept answers of op ids and the reply's shape."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from django.db.models import QuerySet

from records.models import (
    RecordTombstone,
    SyncOpResult,
    WeddingStrategy,
)
from records.registry import Actor, RecordKind
from wedsync.models import AuditOutcome
from wedsync.refusals import ErrorCode, Refused
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

MAX_BATCH_OPS = 50
TIMES = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC) - timedelta(microseconds=1))
DELETED = object()  # what a deletion "writes" into every field, for the strategies


class SyncRefused(Refused):
    """An op that cannot be applied; ``details`` go into the error (``op``: its index in a batch,
    ``deleted_seq``: the seq that deleted the record)."""

    def __init__(self, *, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(code=code, message=message)
        self.details = details
        self.audit: dict[str, Any] | None = None  # an entry still to write (see audited)


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

    @property
    def answer(self) -> dict[str, Any]:
        """What the client is told, from a socket or over REST: a resent op id's says ``duplicate``."""
        return {**self.reply, "duplicate": True} if self.duplicate else self.reply


def wire_value(value: Any) -> Any:
    """A change's value as the records' values show it (datetimes in UTC, ISO 8601, ``Z``)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return sorted(value)
    return value


def changes_checked(kind: RecordKind, raw: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    try:
        checked = msgspec.convert(raw, kind.changes)
    except msgspec.ValidationError as exc:
        raise SyncRefused(code="invalid", message=f"changes: {exc}") from None
    changes = {name: getattr(checked, name) for name in checked.__struct_fields__}
    changes = {name: value for name, value in changes.items() if value is not msgspec.UNSET}
    for name, value in changes.items():
        # Python cannot turn year 1 at +01:00 or year 9999 at -01:00 into UTC, which every time goes through.
        if isinstance(value, datetime) and not TIMES[0] <= value <= TIMES[1]:
            raise SyncRefused(code="invalid", message=f"changes: {name} must fall between 1900 and 2199")
    if not creating:
        late = sorted(set(changes) & kind.create_only)
        if late:
            raise SyncRefused(code="invalid", message=f"changes: {late[0]} is set when the record is created only")
    return changes


def one_row(queryset: QuerySet[Any]) -> Any:
    """The row a lookup by a unique key finds, or None; ``first()`` would add the model's ORDER BY,
    compiled and sorted for nothing on a single row."""
    return next(iter(queryset.order_by()[:1]), None)


def record_strategy(*, wedding_id: int, kind: RecordKind) -> str:
    chosen = WeddingStrategy.objects.filter(wedding_id=wedding_id, kind=kind.name).values_list("strategy", flat=True)
    return one_row(chosen) or kind.default_strategy.value


def refuse_forbidden(
    *, actor: Actor, kind: RecordKind, record_id: int | None, reason: str, client: ClientInfo | None
) -> SyncRefused:
    """A ``forbidden`` refusal whose audit entry is written once the refused transaction is gone
    (:func:`audited`): written inside it, the rollback would take the entry too."""
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
def audited() -> Iterator[None]:
    """Around a change's transaction: the audit entry of a refusal raised in it, after the rollback."""
    try:
        yield
    except SyncRefused as refused:
        if refused.audit is not None:
            audit_record(action=AuditAction.RECORD_REFUSE, outcome=AuditOutcome.REFUSED, **refused.audit)
            refused.audit = None
        raise


def op_result_kept(*, actor: Actor, op_id: str | None) -> SyncResult | None:
    if op_id is None:
        return None
    kept = SyncOpResult.objects.filter(user=actor.user, wedding_id=actor.wedding_id, op_id=op_id).values_list(
        "result", flat=True
    )
    first = one_row(kept)
    return None if first is None else SyncResult(reply=first, duplicate=True)


def op_result_keep(*, actor: Actor, op_id: str | None, reply: dict[str, Any]) -> SyncResult:
    if op_id is not None:
        SyncOpResult.objects.create(user=actor.user, wedding_id=actor.wedding_id, op_id=op_id, result=reply)
    return SyncResult(reply=reply)


def reply_for(
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


def deleted_refusal(kind: RecordKind, *, wedding_id: int, record_id: int) -> SyncRefused:
    """``not_found``, with the seq of its ``record.deleted`` event for a deleted record."""
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
