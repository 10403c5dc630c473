"""Adding and changing wedding members, with the access consequences of a change."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils.crypto import get_random_string

from wedsync.models import AuditOutcome, Member
from wedsync.permissions import Permission, roles_with_permission
from wedsync.refusals import Refused
from wedsync.selectors import wedding_may_oversee
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.auth import tokens_revoke_for_user
from wedsync.signals import member_access_changed, member_details_changed

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
        elif before is not None and changed:  # what events show of the sender (their name) may have changed
            member_details_changed.send(
                sender=Member, user_id=member.user_id, wedding_id=member.wedding_id, member_id=member.pk
            )
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


def member_may_manage(*, user: User | AnonymousUser, wedding_id: int, is_key: bool) -> bool:
    """Whether the caller may add, change and remove the wedding's members (and see their contact
    details): the staff who oversee it (a person with Django's ``change_member`` permission; a key,
    whose ``members`` or ``read`` scope was checked), or an active member whose role may manage
    members (the planner, the couple)."""
    if wedding_may_oversee(user=user, wedding_id=wedding_id) and (is_key or user.has_perm("wedsync.change_member")):
        return True
    return Member.objects.filter(
        user_id=user.pk or 0,
        wedding_id=wedding_id,
        is_active=True,
        role__in=roles_with_permission(permission=Permission.MANAGE_MEMBERS),
    ).exists()


def member_manage_check(
    *, user: User | AnonymousUser, wedding_id: int, is_key: bool, client: ClientInfo | None
) -> None:
    """:func:`member_may_manage`, or :class:`Refused` ``forbidden`` (audited), alike for a wedding
    that does not exist."""
    if not member_may_manage(user=user, wedding_id=wedding_id, is_key=is_key):
        reason = "Only the wedding's planner, couple and overseeing staff may manage its members."
        audit_record(
            action=AuditAction.API_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=user,
            target=f"wedding:{wedding_id}",
            client=client,
            details={"op": "manage members", "reason": reason},
        )
        raise Refused(code="forbidden", message=reason)


def member_invite(
    *,
    wedding_id: int,
    email: str,
    first_name: str,
    last_name: str,
    fields: dict[str, object],
    actor: User,
    client: ClientInfo | None = None,
) -> Member:
    """Add the person with this e-mail to the wedding, making them an account (no password yet)
    if they have none. :class:`Refused` ``conflict`` when they are a member already."""
    with transaction.atomic():
        person = User.objects.filter(email__iexact=email).order_by("pk").first()
        if person is None:
            # Not the address: a member's name falls back to the username, which other members see.
            person = User.objects.create_user(
                username=f"member-{get_random_string(12).lower()}",
                email=email,
                first_name=first_name,
                last_name=last_name,
                password=None,
            )
        elif person.is_staff or person.is_superuser or not person.is_active:
            # Staff oversee weddings, they do not join them by someone else's say-so; and a closed
            # account stays closed. Said without naming the account.
            raise Refused(code="conflict", message="This address cannot be invited: ask an administrator.")
        elif Member.objects.filter(user=person, wedding_id=wedding_id).exists():
            raise Refused(code="conflict", message=f"{email} is a member of this wedding already.")
        member = Member(user=person, wedding_id=wedding_id, **fields)
        member_save(member=member, actor=actor, client=client)
    return member
