"""Agencies and their coordinators: the Django group that gives a coordinator the panel's pages.

What a coordinator may do is the group's model permissions; *which weddings* they may do it to is
staff scope (wedsync/selectors.py ``weddings_overseen``), whatever the permissions say.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.db.models import Q

from wedsync.models import Agency

COORDINATORS_GROUP = "Coordinators"

# (app label, model, actions). Not granted: deleting weddings, anything about agencies, tickets or
# token state (superusers only), and adding or changing accounts (Django asks for both to add one,
# and a change could reset a couple's password): a coordinator looks accounts up to make members.
_COORDINATOR_PERMISSIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("wedsync", "wedding", ("view", "add", "change")),
    ("wedsync", "member", ("view", "add", "change", "delete")),
    ("wedsync", "timelineitem", ("view", "add", "change", "delete")),
    ("wedsync", "task", ("view", "add", "change", "delete")),
    ("wedsync", "rsvp", ("view", "add", "change", "delete")),
    ("wedsync", "auditlog", ("view",)),
    ("records", "conflict", ("view", "change")),  # change: resolving (a conflict is never edited as a row)
    ("records", "weddingstrategy", ("view", "add", "change", "delete")),  # the inline on the wedding page
    ("presence", "alert", ("view", "change")),  # change: the acknowledge action
    ("presence", "emergency", ("view", "change")),  # change: the resolve action
    ("monitoring", "escalation", ("view",)),
    ("monitoring", "deadletter", ("view", "change")),  # change: the retry action
    ("monitoring", "eventwebhook", ("view", "change")),  # change: the pause and resume actions
    ("auth", "user", ("view",)),
)


def coordinator_group_ensure() -> Group:
    """The ``Coordinators`` group with exactly the permissions above (created, or reset to them).

    Raises ``LookupError`` naming any permission that does not exist (migrations not run)."""
    wanted = [(app, f"{action}_{model}") for app, model, actions in _COORDINATOR_PERMISSIONS for action in actions]
    condition = Q(pk__in=[])
    for app, codename in wanted:
        condition |= Q(content_type__app_label=app, codename=codename)
    permissions = list(Permission.objects.filter(condition).select_related("content_type"))
    found = {(permission.content_type.app_label, permission.codename) for permission in permissions}
    missing = sorted(set(wanted) - found)
    if missing:
        raise LookupError(f"permissions missing (run migrate first): {missing}")
    with transaction.atomic():
        group, _created = Group.objects.get_or_create(name=COORDINATORS_GROUP)
        group.permissions.set(permissions)
    return group


def agency_coordinator_add(*, agency: Agency, user: User) -> None:
    """Make ``user`` a coordinator of ``agency``: staff, in the coordinators' group, and one of the
    agency's coordinators (so they oversee its weddings)."""
    group = coordinator_group_ensure()
    with transaction.atomic():
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.add(group)
        agency.coordinators.add(user)
