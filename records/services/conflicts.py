"""Closing an open conflict, from the admin or the API: applied through the engine as the
resolver's fresh edit, and told to everyone concerned."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from realtime.names import EventType
from realtime.services.events import wedding_stream_lock
from records.models import (
    Conflict,
    ConflictResolution,
    ConflictStatus,
)
from records.registry import Actor, record_kind
from records.services.notify import actor_reach, actor_view, emit, members_reach
from records.services.ops import SyncRefused, SyncRequest, SyncResult, audited, deleted_refusal
from records.services.sync import change_apply
from wedsync.models import AuditOutcome
from wedsync.permissions import Permission
from wedsync.services.audit import AuditAction, ClientInfo, audit_record


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
    with audited(), transaction.atomic():
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
            raise deleted_refusal(kind, wedding_id=actor.wedding_id, record_id=conflict.record_id)
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
            result = change_apply(kind=kind, actor=actor, request=request, client=client)
            record = kind.queryset(wedding_id=actor.wedding_id).filter(pk=conflict.record_id).first() or record
        conflict.status = ConflictStatus.RESOLVED
        conflict.resolution = resolution
        conflict.resolved_values = None if result is None else result.reply.get("values")
        conflict.resolved_by = actor.user
        conflict.resolved_at = timezone.now()
        conflict.save()
        submitter = {conflict.member_id} if conflict.member_id else set()
        emit(
            kind=kind,
            actor=actor,
            event_type=EventType.CONFLICT_RESOLVED,
            reach=kind.reach_of(record)
            | actor_reach(actor)
            | members_reach(submitter | set(conflict.against), wedding_id=actor.wedding_id),
            data={
                "record": kind.name,
                "id": conflict.record_id,
                "conflict": conflict.pk,
                "resolution": resolution,
                "version": result.reply["version"] if result else record.version,
                "values": result.reply.get("values") if result else kind.values_of(record),
                "actor": actor_view(actor),
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
