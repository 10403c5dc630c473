from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from wedsync.models import AuditOutcome, Wedding
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.auth import tokens_revoke_for_user


def wedding_delete(*, wedding: Wedding, actor: User | None, client: ClientInfo | None = None) -> None:
    """Delete a wedding and everything in it; its members' outstanding tokens stop working."""
    with transaction.atomic():
        user_ids = sorted(set(wedding.members.values_list("user_id", flat=True)))
        wedding_id, name = wedding.pk, wedding.name
        wedding.delete()
        for user_id in user_ids:
            tokens_revoke_for_user(user_id=user_id, reason="wedding_deleted", actor=actor, client=client)
        audit_record(
            action=AuditAction.WEDDING_DELETE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            wedding_id=wedding_id,
            target=f"wedding:{wedding_id}",
            client=client,
            details={"name": name, "members": len(user_ids)},
        )
