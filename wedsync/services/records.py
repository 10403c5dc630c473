"""Edits of shared records made outside the sync engine (the admin panel).

They bump ``version`` like any other change, so a client's later ``sync`` based on the old version
is treated as stale instead of silently overwriting the edit, and they are audited.
"""

from __future__ import annotations

from typing import TypeVar

from django.contrib.auth.models import User
from django.db import transaction

from wedsync.models import AuditOutcome, Rsvp, Task, TimelineItem
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

RecordT = TypeVar("RecordT", TimelineItem, Task, Rsvp)
_UNVERSIONED = frozenset({"id", "version", "updated_at"})


def record_save(*, record: RecordT, actor: User | None, client: ClientInfo | None = None) -> RecordT:
    with transaction.atomic():
        before = type(record).objects.select_for_update().filter(pk=record.pk).first() if record.pk else None
        fields = [field.attname for field in record._meta.concrete_fields if field.attname not in _UNVERSIONED]
        changed = (
            fields if before is None else [name for name in fields if getattr(before, name) != getattr(record, name)]
        )
        if before is not None and changed:
            record.version = before.version + 1
        record.save()
        wedding_id = record.guest.wedding_id if isinstance(record, Rsvp) else record.wedding_id
        audit_record(
            action=AuditAction.RECORD_CHANGE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            wedding_id=wedding_id,
            target=f"{record._meta.model_name}:{record.pk}",
            client=client,
            details={"changed": changed, "version": record.version},
        )
    return record
