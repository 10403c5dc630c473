"""What a node shows of presence: each wedding's shown state and each viewer's diff frames.

A :class:`FeedPresence` takes every node's presence entries for one wedding (versions only grow, so
a diff overtaken on its way is dropped), batches them per window and writes one ``presence_diff``
frame per viewer role; a :class:`Viewer` is one subscription's side of it. Reconciliation compares
the shown state with the store's, so a diff the layer lost is repaired.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from presence.selectors import presence_location_visible
from presence.state import DevicePresence
from presence.store import ToldWire
from realtime.framing import text_frame
from realtime.messages import PresenceEntry, PresenceKind
from realtime.names import Priority, wedding_topic
from realtime.node.socket import Socket
from realtime.protocol import encode
from realtime.selectors import MembershipView
from wedsync.permissions import Permission, role_has_permission

FLOOR_SECONDS = 2.0  # how long a new subscriber's snapshot versions filter its diffs


@dataclass(slots=True, eq=False)
class Viewer:
    """A subscription's side of presence: what its socket is shown, and its device in the store."""

    socket: Socket
    topic: str
    member_id: int = 0
    role: str = ""
    sees: bool = False  # view_presence: gets presence_diff frames
    # Diffs held until the subscribe reply (with its snapshot) is on its way.
    held: list[list[PresenceEntry]] | None = field(default_factory=list)
    present: bool = False  # its device counts in the wedding's presence (joined, leave not yet asked)
    # For a moment after the snapshot, diffs it already showed (member -> version) may still be on
    # their way from other nodes: those are not sent again.
    floor: dict[int, int] | None = None
    floor_until: float = 0.0
    heard_told: float = 0.0  # the last heartbeat time handed to the store
    device: DevicePresence | None = None  # the device as its socket last set it: what a rejoin restores

    def confirm(self, membership: MembershipView) -> None:
        self.member_id, self.role = membership.member_id, membership.role
        self.sees = role_has_permission(role=membership.role, permission=Permission.VIEW_PRESENCE)

    def live(self, *, versions: dict[int, int]) -> None:
        """The reply with the snapshot (``versions``: member -> version shown) is queued: send the
        diffs held meanwhile that are newer than the snapshot, then diffs as they come."""
        held, self.held = self.held or [], None
        if not self.sees:
            return
        self.floor = versions
        self.floor_until = time.monotonic() + FLOOR_SECONDS
        self.push([entry for batch in held for entry in batch])

    def push(self, entries: list[PresenceEntry], frame: tuple[str, bytes] | None = None) -> None:
        """Send a batch of entries (``frame``: the batch already encoded for this role)."""
        floor = self.floor
        if floor is not None:
            if time.monotonic() > self.floor_until:
                self.floor = floor = None
            else:
                fresh = [entry for entry in entries if entry.v > floor.get(entry.member, 0)]
                if len(fresh) != len(entries):
                    entries, frame = fresh, None
        if not entries:
            return
        if frame is None:
            text = presence_diff_text(topic=self.topic, entries=merge_entries(entries), viewer_role=self.role)
            self.socket.push_event(text, priority=Priority.NORMAL, topic=None, seq=None, conflate_key=None)
        else:
            self.socket.push_event(
                frame[0], priority=Priority.NORMAL, topic=None, seq=None, conflate_key=None, framed=frame[1]
            )


def merge_entries(entries: list[PresenceEntry]) -> list[PresenceEntry]:
    """One entry per member, the newest state, its kind as the whole sequence reads to a client: a
    join stays a join until a leave; a leave followed by a join is an update."""
    merged: dict[int, PresenceEntry] = {}
    for entry in entries:
        previous = merged.get(entry.member)
        if previous is not None and entry.kind != "leaves" and previous.kind != entry.kind:
            kind: PresenceKind = "joins" if previous.kind == "joins" else "updates"
            entry = msgspec.structs.replace(entry, kind=kind)
        merged[entry.member] = entry
    return list(merged.values())


def presence_diff_text(*, topic: str, entries: list[PresenceEntry], viewer_role: str) -> str:
    """The ``presence_diff`` frame as ``viewer_role`` may see it (PROTOCOL.md section 4)."""
    frame: dict[str, Any] = {"op": "presence_diff", "topic": topic, "joins": {}, "leaves": {}, "updates": {}}
    for entry in entries:
        state = entry.state
        if state.get("location") is not None and not presence_location_visible(
            viewer_role=viewer_role, subject_role=entry.role
        ):
            state = {**state, "location": None}
        frame[entry.kind][str(entry.member)] = state
    return encode(frame)


class FeedPresence:
    """One wedding's presence as this node has shown it to its viewers."""

    def __init__(self, wedding_id: int) -> None:
        self.wedding_id = wedding_id
        self.viewers: dict[str, Viewer] = {}  # connection id -> viewer
        self.versions: dict[int, int] = {}  # member -> newest version seen here
        # member -> (role, state as JSON) of members this node last told online: what a lost leave
        # leaves. Kept encoded, since idle weddings hold it for every member (decision 0016).
        self.shown: dict[int, tuple[str, str]] = {}
        # member -> newest version a subscriber's snapshot showed here (reconciliation only: a diff
        # of that version may still be due to the viewers that were here before)
        self.snapshot_versions: dict[int, int] = {}
        self.pending: list[PresenceEntry] = []
        self._flush: asyncio.Handle | None = None

    def offer(self, entry: PresenceEntry) -> None:
        """A member's presence changed (told by any node): batch it for this window's frame."""
        member_id, version = entry.member, entry.v
        if version <= self.versions.get(member_id, 0):
            return
        self.versions[member_id] = version
        if entry.kind == "leaves":
            self.shown.pop(member_id, None)
        else:
            self.shown[member_id] = (entry.role, encode(entry.state))
        self.pending.append(entry)
        if self._flush is None:
            # The sender already batched its window: flush once this layer message is read.
            self._flush = asyncio.get_running_loop().call_soon(self.flush)

    def seed(self, *, members: dict[str, dict[str, Any]], versions: dict[int, int]) -> None:
        """What a new viewer's snapshot showed, so reconciliation neither repeats it as joins nor
        misses the leave of a member that no diff here ever named."""
        for member_id, version in versions.items():
            if version > self.snapshot_versions.get(member_id, 0):
                self.snapshot_versions[member_id] = version
        shown = self.shown
        for member, state in members.items():
            if int(member) not in shown:  # most are shown already: encode only the new ones
                shown[int(member)] = (state["role"], encode(state))

    def reconcile(self, *, told: list[ToldWire], read_at_ms: int) -> int:
        """Repair diffs this node missed (the layer drops messages at capacity; a send can fail):
        ``told`` is the store's state read at ``read_at_ms``. Newer states are offered as diffs;
        members shown online that the store no longer has leave, unless a diff about them came
        after the read. Returns how many repairs were offered."""
        repaired = 0
        present = set()
        for entry in told:
            present.add(entry.member_id)
            known = max(self.versions.get(entry.member_id, 0), self.snapshot_versions.get(entry.member_id, 0))
            if entry.version > known:
                kind: PresenceKind = "updates" if entry.member_id in self.shown else "joins"
                self.offer(
                    PresenceEntry(
                        wedding=self.wedding_id,
                        member=entry.member_id,
                        kind=kind,
                        role=entry.role,
                        state=entry.wire,
                        v=entry.version,
                    )
                )
                repaired += 1
        for member_id, (role, shown_state) in list(self.shown.items()):
            known = max(self.versions.get(member_id, 0), self.snapshot_versions.get(member_id, 0))
            if member_id not in present and known < read_at_ms:
                gone = {**msgspec.json.decode(shown_state), "status": "offline", "devices": 0}
                self.offer(
                    PresenceEntry(
                        wedding=self.wedding_id, member=member_id, kind="leaves", role=role, state=gone, v=read_at_ms
                    )
                )
                repaired += 1
        return repaired

    def flush(self) -> None:
        self._flush = None
        entries, self.pending = merge_entries(self.pending), []
        if not entries:
            return
        topic = wedding_topic(self.wedding_id)
        frames: dict[str, tuple[str, bytes]] = {}  # viewer role -> frame, built once per role
        for viewer in list(self.viewers.values()):
            if viewer.held is not None:
                viewer.held.append(entries)
                continue
            if not viewer.sees:
                continue
            frame = frames.get(viewer.role)
            if frame is None:
                text = presence_diff_text(topic=topic, entries=entries, viewer_role=viewer.role)
                frame = frames[viewer.role] = (text, text_frame(text.encode()))
            viewer.push(entries, frame)

    def stop(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
