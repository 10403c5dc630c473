"""What the oversight panel does to shared records, through the sync engine (docs/decisions/0027).

An admin's edit is a staff actor's op like a member's (a planner's view and rank): based on the
version the page showed, so a stale form is resolved by the wedding's strategy or kept as a
conflict, and everyone concerned is told. A wedding's choice of strategy per kind is audited.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from records.models import Strategy, WeddingStrategy
from records.registry import record_kind
from records.services import SyncRefused, SyncRequest, SyncResult, actor_for_staff, record_strategy, record_sync
from wedsync.models import AuditOutcome
from wedsync.services.audit import AuditAction, ClientInfo, audit_record


def _audit_change(*, user: User, wedding_id: int, result: SyncResult, client: ClientInfo | None) -> None:
    reply = result.reply
    details = {
        key: reply[key] for key in ("outcome", "version", "changed", "lost", "conflict", "deleted") if key in reply
    }
    audit_record(
        action=AuditAction.RECORD_CHANGE,
        outcome=AuditOutcome.SUCCESS,
        actor=user,
        wedding_id=wedding_id,
        target=f"{reply['record']}:{reply['id']}",
        client=client,
        details={"via": "admin", **details},
    )


def record_admin_save(
    *,
    user: User,
    kind: str,
    wedding_id: int,
    record_id: int | None,
    base_version: int | None,
    changes: dict[str, Any],
    client: ClientInfo | None = None,
) -> SyncResult:
    """Create (``record_id`` None) or change a record from the admin, as of ``base_version`` (the
    version the form showed). Raises :class:`SyncRefused` when it cannot be applied; a stale form
    is resolved, never refused: the result's outcome says how. Audited (``record.change``)."""
    request = SyncRequest(kind=kind, record_id=record_id, base_version=base_version, changes=changes)
    result = record_sync(actor=actor_for_staff(user=user, wedding_id=wedding_id), request=request, client=client)
    _audit_change(user=user, wedding_id=wedding_id, result=result, client=client)
    return result


def record_admin_delete(
    *, user: User, kind: str, wedding_id: int, record_id: int, base_version: int, client: ClientInfo | None = None
) -> SyncResult:
    """Delete a record from the admin: a tombstone and ``record.deleted`` to everyone concerned."""
    request = SyncRequest(kind=kind, record_id=record_id, base_version=base_version, changes={}, delete=True)
    result = record_sync(actor=actor_for_staff(user=user, wedding_id=wedding_id), request=request, client=client)
    _audit_change(user=user, wedding_id=wedding_id, result=result, client=client)
    return result


def _strategy_audit(
    *, user: User, wedding_id: int, kind: str, before: str, after: str, client: ClientInfo | None
) -> None:
    audit_record(
        action=AuditAction.RECORD_STRATEGY_CHANGE,
        outcome=AuditOutcome.SUCCESS,
        actor=user,
        wedding_id=wedding_id,
        target=f"strategy:{kind}",
        client=client,
        details={"kind": kind, "before": before, "after": after},
    )


def wedding_strategy_save(
    *, wedding_id: int, kind: str, strategy: str, user: User, client: ClientInfo | None = None
) -> WeddingStrategy:
    """Choose the wedding's strategy for one kind of record (the next stale edit uses it); audited
    with the strategy it replaces when it changes anything."""
    registered = record_kind(kind)
    if registered is None:
        raise SyncRefused(code="invalid", message=f"kind: unknown record kind {kind[:40]!r}")
    if strategy not in Strategy.values:
        raise SyncRefused(code="invalid", message=f"strategy: one of {', '.join(Strategy.values)}")
    with transaction.atomic():
        before = record_strategy(wedding_id=wedding_id, kind=registered)
        chosen, _created = WeddingStrategy.objects.update_or_create(
            wedding_id=wedding_id, kind=kind, defaults={"strategy": strategy}
        )
        if before != strategy:
            _strategy_audit(user=user, wedding_id=wedding_id, kind=kind, before=before, after=strategy, client=client)
    return chosen


def wedding_strategy_delete(*, chosen: WeddingStrategy, user: User, client: ClientInfo | None = None) -> None:
    """Drop a wedding's choice: the kind's default applies again; audited when that changes anything."""
    registered = record_kind(chosen.kind)
    with transaction.atomic():
        WeddingStrategy.objects.filter(pk=chosen.pk).delete()
        after = registered.default_strategy.value if registered is not None else ""
        if chosen.strategy != after:
            _strategy_audit(
                user=user,
                wedding_id=chosen.wedding_id,
                kind=chosen.kind,
                before=chosen.strategy,
                after=after,
                client=client,
            )
