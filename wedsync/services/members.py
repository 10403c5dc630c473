"""Adding and changing wedding members, with the access consequences of a change."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction

from wedsync.models import AuditOutcome, Member
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.auth import tokens_revoke_for_user
from wedsync.signals import member_access_changed

# Changing any of these changes what the member may see or do, so the user's tokens are revoked.
_ACCESS_FIELDS = ("role", "is_active", "wedding_id", "user_id")
_AUDITED_FIELDS = (*_ACCESS_FIELDS, "is_key_person", "display_name", "vendor_company", "vendor_contact")


@dataclass(frozen=True, slots=True)
class MemberSaveResult:
    member: Member
    changed: dict[str, tuple[object, object]]
    tokens_revoked: bool


def member_save(*, member: Member, actor: User | None, client: ClientInfo | None = None) -> MemberSaveResult:
    """Store ``member`` as edited (new or changed).

    A change of role, activity, wedding or user revokes the affected users' outstanding tokens, so
    a demoted or removed member cannot keep using what they were given before. Every save is audited.
    """
    member.full_clean()
    with transaction.atomic():
        before = None if member.pk is None else Member.objects.select_for_update().filter(pk=member.pk).first()
        member.save()
        changed: dict[str, tuple[object, object]]
        if before is None:
            changed = {field: (None, getattr(member, field)) for field in _AUDITED_FIELDS}
        else:
            changed = {
                field: (getattr(before, field), getattr(member, field))
                for field in _AUDITED_FIELDS
                if getattr(before, field) != getattr(member, field)
            }
        access_changed = before is not None and any(field in changed for field in _ACCESS_FIELDS)
        if access_changed and before is not None:
            # Sockets hear "unsubscribed, and why" before the token revocation closes them.
            member_access_changed.send(
                sender=Member,
                user_id=before.user_id,
                wedding_id=before.wedding_id,
                member_id=member.pk,
                reason="deactivated" if not member.is_active else "role_changed",
            )
            for user_id in {before.user_id, member.user_id}:
                tokens_revoke_for_user(user_id=user_id, reason="member_changed", actor=actor, client=client)
        audit_record(
            action=AuditAction.MEMBER_ADD if before is None else AuditAction.MEMBER_CHANGE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            wedding_id=member.wedding_id,
            target=f"member:{member.pk}",
            client=client,
            details={field: [str(old), str(new)] for field, (old, new) in changed.items()},
        )
    return MemberSaveResult(member=member, changed=changed, tokens_revoked=access_changed)


def member_remove(*, member: Member, actor: User | None, client: ClientInfo | None = None) -> None:
    """Remove a member from their wedding; the user's outstanding tokens stop working."""
    with transaction.atomic():
        member_id, wedding_id, user_id, role = member.pk, member.wedding_id, member.user_id, member.role
        member.delete()
        member_access_changed.send(
            sender=Member, user_id=user_id, wedding_id=wedding_id, member_id=member_id, reason="removed"
        )
        tokens_revoke_for_user(user_id=user_id, reason="member_removed", actor=actor, client=client)
        audit_record(
            action=AuditAction.MEMBER_REMOVE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            wedding_id=wedding_id,
            target=f"member:{member_id}",
            client=client,
            details={"user_id": user_id, "role": role},
        )
