"""Who may look at a wedding's day-of state over the staff API (the presence snapshot, the list of
emergencies): the wedding's active members, each with their own role's view, and the staff who
oversee the wedding (``wedsync.selectors.wedding_may_oversee``: superusers, and coordinators of its
agency or assigned to it), who see what a planner sees. Staff outside their scope are strangers
here. Refusals are audited; the alerts API has its own, narrower rule
(presence/alerts/selectors.py ``alert_may_acknowledge``)."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User

from wedsync.models import AuditOutcome, Member, Wedding
from wedsync.permissions import Role
from wedsync.refusals import Refused
from wedsync.selectors import wedding_may_oversee
from wedsync.services.audit import AuditAction, ClientInfo, audit_record


def wedding_viewer_role(*, user: User | AnonymousUser, wedding_id: int) -> str | None:
    """The role whose view of the wedding this user gets, or None: a planner's for staff who oversee
    it (even when they are also a guest there), else the user's active membership's (a staff user
    keeps their member view of a wedding outside their scope)."""
    if not user.is_authenticated or not user.is_active:
        return None
    if wedding_may_oversee(user=user, wedding_id=wedding_id):
        return Role.PLANNER.value
    role: str | None = (
        Member.objects.filter(user_id=user.pk, wedding_id=wedding_id, is_active=True)
        .values_list("role", flat=True)
        .first()
    )
    return role


def wedding_view_check(
    *,
    user: User | AnonymousUser,
    wedding_id: int,
    action: AuditAction,
    op: str,
    target: str,
    client: ClientInfo | None = None,
) -> str:
    """The caller's viewer role; :class:`Refused` otherwise: ``forbidden`` (audited as
    ``action``) for anyone but members and the staff who oversee the wedding (a coordinator naming
    a wedding that does not exist is refused alike: existence is not theirs to learn),
    ``not_found`` for a superuser naming no wedding."""
    role = wedding_viewer_role(user=user, wedding_id=wedding_id)
    if role is None:
        reason = "Only the wedding's members and staff may do that."
        audit_record(
            action=action,
            outcome=AuditOutcome.REFUSED,
            actor=user,
            wedding_id=wedding_id,
            target=target[:200],
            client=client,
            details={"op": op, "reason": reason},
        )
        raise Refused(code="forbidden", message=reason)
    if user.is_superuser and not Wedding.objects.filter(pk=wedding_id).exists():
        raise Refused(code="not_found", message=f"There is no wedding {wedding_id}.")
    return role
