"""Emergency reads: which are open, who may resolve them, a wedding's list."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from presence.models import Emergency
from wedsync.models import Member
from wedsync.permissions import Role
from wedsync.selectors import wedding_may_oversee

# Shown to the wedding party for a resolution made by staff: the staff user's name is not theirs to see.
STAFF_NAME = "WedSync staff"


class EmergencyState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


def emergencies_open_ids(*, wedding_id: int) -> list[int]:
    """The wedding's open emergencies, oldest first; empty outside emergency mode. Read fresh on
    every call: emergency mode must end the moment the last one is resolved, so nothing caches it."""
    return list(
        Emergency.objects.filter(wedding_id=wedding_id, resolved_at__isnull=True)
        .order_by("raised_at", "pk")
        .values_list("pk", flat=True)
    )


def emergency_open_raised_by(*, wedding_id: int, member_id: int) -> Emergency | None:
    """The member's own open emergency in the wedding (the oldest, should there be several), which
    a further alarm of theirs updates instead of opening another."""
    return (
        Emergency.objects.filter(wedding_id=wedding_id, raised_by_id=member_id, resolved_at__isnull=True)
        .select_related("raised_event")
        .order_by("raised_at", "pk")
        .first()
    )


def emergencies_raised_since(*, member_id: int, since: datetime) -> list[datetime]:
    """When the member opened each emergency raised after ``since``, oldest first."""
    return list(
        Emergency.objects.filter(raised_by_id=member_id, raised_at__gt=since)
        .order_by("raised_at")
        .values_list("raised_at", flat=True)
    )


def emergency_may_resolve(*, user: User | AnonymousUser, wedding_id: int) -> bool:
    """The staff who oversee the wedding (docs/decisions/0022), and its active planner (the couple
    may not: docs/decisions/0011)."""
    if not user.is_authenticated or not user.is_active:
        return False
    if wedding_may_oversee(user=user, wedding_id=wedding_id):
        return True
    return Member.objects.filter(user_id=user.pk, wedding_id=wedding_id, is_active=True, role=Role.PLANNER).exists()


def wedding_emergencies(*, wedding_id: int, state: EmergencyState = EmergencyState.OPEN) -> QuerySet[Emergency]:
    """A wedding's emergencies, newest first, with what their views show."""
    emergencies = Emergency.objects.filter(wedding_id=wedding_id).select_related(
        "raised_event", "raised_by__user", "resolved_by"
    )
    if state is EmergencyState.OPEN:
        return emergencies.filter(resolved_at__isnull=True)
    if state is EmergencyState.RESOLVED:
        return emergencies.filter(resolved_at__isnull=False)
    return emergencies


def emergency_resolver_view(*, user: User, wedding_id: int) -> dict[str, Any]:
    """Who resolved an emergency, as the whole wedding is told: the planner by name, staff as staff."""
    planner = (
        Member.objects.filter(user_id=user.pk, wedding_id=wedding_id, role=Role.PLANNER).select_related("user").first()
    )
    if planner is None:
        return {"member": None, "role": "staff", "name": STAFF_NAME}
    return {"member": planner.pk, "role": planner.role, "name": planner.name}
