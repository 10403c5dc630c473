"""Reads of presence and of the wedding-day safety state."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from presence.models import Emergency
from presence.state import DevicePresence, MemberPresence
from presence.store import presence_store
from wedsync.permissions import Permission, Role, role_has_permission


def wedding_emergency_open(*, wedding_id: int) -> bool:
    """Whether an emergency is open in the wedding (emergency mode, PROTOCOL.md section 6 / issue 5)."""
    return Emergency.objects.filter(wedding_id=wedding_id, resolved_at__isnull=True).exists()


# --- Presence (presence/store.py) -------------------------------------------------------------------

_SEES_EVERY_LOCATION = frozenset({Role.PLANNER.value, Role.VENUE.value})


def presence_location_visible(*, viewer_role: str, subject_role: str) -> bool:
    """Locations of members who may share one are seen by every viewer of presence; those shared only
    because of an emergency, by the planner and the venue (who run the evacuation)."""
    return viewer_role in _SEES_EVERY_LOCATION or role_has_permission(
        role=subject_role, permission=Permission.SHARE_LOCATION
    )


@dataclass(frozen=True, slots=True)
class PresenceSnapshot:
    wire: dict[str, Any]  # ``data.presence`` of the subscribe reply
    versions: dict[int, int]  # member -> version of the state shown


def presence_snapshot(*, wedding_id: int, viewer_role: str) -> PresenceSnapshot:
    """The subscribe reply's presence: everyone's state for members with ``view_presence``, counts
    per role for the others. Two Redis reads and one decode per member: every subscribe pays it."""
    told = sorted(presence_store().told_wire(wedding_id=wedding_id, now=time.time()))
    counts: dict[str, int] = {}
    for entry in told:
        counts[entry.role] = counts.get(entry.role, 0) + 1
    wire: dict[str, Any] = {"online": counts}
    if role_has_permission(role=viewer_role, permission=Permission.VIEW_PRESENCE):
        members = {}
        for entry in told:
            state = entry.wire
            if state.get("location") is not None and not presence_location_visible(
                viewer_role=viewer_role, subject_role=entry.role
            ):
                state = {**state, "location": None}
            members[str(entry.member_id)] = state
        wire["members"] = members
    return PresenceSnapshot(wire=wire, versions={entry.member_id: entry.version for entry in told})


def presence_members(*, wedding_id: int) -> dict[int, MemberPresence]:
    """Every online member's merged state (for rules, the admin and the API)."""
    return {
        member_id: state
        for member_id, (state, _v) in presence_store().told(wedding_id=wedding_id, now=time.time()).items()
    }


def presence_devices(*, wedding_id: int) -> list[DevicePresence]:
    """Every live device of the wedding."""
    return presence_store().devices(wedding_id=wedding_id, now=time.time())
