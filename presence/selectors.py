"""Reads of presence and of the wedding-day safety state."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from presence.models import Emergency
from presence.state import DevicePresence, MemberPresence
from presence.store import ToldWire, presence_store
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
    per role for the others."""
    return presence_snapshots(wanted=[(wedding_id, viewer_role)])[(wedding_id, viewer_role)]


def presence_snapshots(*, wanted: list[tuple[int, str]]) -> dict[tuple[int, str], PresenceSnapshot]:
    """Snapshots for (wedding, viewer role) pairs: two Redis reads and one decode per member per
    wedding in all, however many pairs (a node's batch of joining subscribers shares them)."""
    weddings = sorted({wedding_id for wedding_id, _role in wanted})
    told = presence_store().told_wire(wedding_ids=weddings, now=time.time())
    snapshots = {}
    for wedding_id in weddings:
        entries = sorted(told[wedding_id])
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.role] = counts.get(entry.role, 0) + 1
        versions = {entry.member_id: entry.version for entry in entries}  # shared: read only
        for viewer_role in {role for wedding, role in wanted if wedding == wedding_id}:
            snapshots[(wedding_id, viewer_role)] = PresenceSnapshot(
                wire=_snapshot_wire(entries=entries, counts=counts, viewer_role=viewer_role), versions=versions
            )
    return snapshots


def _snapshot_wire(*, entries: list[ToldWire], counts: dict[str, int], viewer_role: str) -> dict[str, Any]:
    wire: dict[str, Any] = {"online": counts}
    if role_has_permission(role=viewer_role, permission=Permission.VIEW_PRESENCE):
        members = {}
        for entry in entries:
            state = entry.wire
            if state.get("location") is not None and not presence_location_visible(
                viewer_role=viewer_role, subject_role=entry.role
            ):
                state = {**state, "location": None}
            members[str(entry.member_id)] = state
        wire["members"] = members
    return wire


def presence_members(*, wedding_id: int) -> dict[int, MemberPresence]:
    """Every online member's merged state (for rules, the admin and the API)."""
    return {
        member_id: state
        for member_id, (state, _v) in presence_store().told(wedding_id=wedding_id, now=time.time()).items()
    }


def presence_devices(*, wedding_id: int) -> list[DevicePresence]:
    """Every live device of the wedding."""
    return presence_store().devices(wedding_id=wedding_id, now=time.time())
