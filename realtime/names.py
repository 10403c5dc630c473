"""Every name the realtime layer puts on the wire or in Redis: topics, event types, priorities,
channel-layer groups and message types. Built here and nowhere else, so a rename is one change.
"""

from __future__ import annotations

import enum
import re

from wedsync.permissions import Permission

# --- Topics (client-facing) -------------------------------------------------------------------------

_TOPIC = re.compile(r"wedding:([1-9][0-9]{0,17})")


def wedding_topic(wedding_id: int) -> str:
    return f"wedding:{wedding_id}"


def wedding_id_from_topic(topic: str) -> int | None:
    """The wedding a ``wedding:<id>`` topic names, or None when it is not such a topic."""
    match = _TOPIC.fullmatch(topic)  # not match(): its "$" would let a trailing newline through
    return int(match.group(1)) if match else None


# --- Priorities ---------------------------------------------------------------------------------------


class Priority(enum.IntEnum):
    """Higher value goes first. ``emergency`` and ``critical`` are never conflated or dropped."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4
    EMERGENCY = 5

    @property
    def wire(self) -> str:
        return self.name.lower()

    @classmethod
    def from_wire(cls, value: str) -> Priority:
        return cls[value.upper()]


# --- Event types --------------------------------------------------------------------------------------


class EventType(enum.StrEnum):
    CHAT_MESSAGE = "chat.message"
    RSVP_UPDATED = "rsvp.updated"
    TIMELINE_CHANGED = "timeline.changed"
    VENDOR_STATUS = "vendor.status"
    TASK_UPDATED = "task.updated"
    EMERGENCY_ALERT = "emergency.alert"
    EMERGENCY_RESOLVED = "emergency.resolved"
    ALERT_RAISED = "alert.raised"
    ALERT_RESOLVED = "alert.resolved"
    RECORD_CREATED = "record.created"
    RECORD_UPDATED = "record.updated"
    RECORD_DELETED = "record.deleted"
    RECORD_CONFLICT = "record.conflict"
    CONFLICT_RESOLVED = "conflict.resolved"


# Types only the server publishes (alerts, the end of an emergency, and record changes made by ``sync``).
SERVER_ONLY_TYPES: frozenset[EventType] = frozenset(
    {
        EventType.ALERT_RAISED,
        EventType.ALERT_RESOLVED,
        EventType.EMERGENCY_RESOLVED,
        EventType.RECORD_CREATED,
        EventType.RECORD_UPDATED,
        EventType.RECORD_DELETED,
        EventType.RECORD_CONFLICT,
        EventType.CONFLICT_RESOLVED,
    }
)

# Types clients published before shared records existed; records now change only through ``sync``,
# which emits the ``record.*`` events (a protocol change, docs/protocol.md section 7).
RETIRED_CLIENT_TYPES: frozenset[EventType] = frozenset(
    {EventType.RSVP_UPDATED, EventType.TIMELINE_CHANGED, EventType.TASK_UPDATED}
)

DEFAULT_PRIORITY: dict[EventType, Priority] = {
    EventType.CHAT_MESSAGE: Priority.NORMAL,
    EventType.RSVP_UPDATED: Priority.NORMAL,
    EventType.TIMELINE_CHANGED: Priority.HIGH,
    EventType.VENDOR_STATUS: Priority.NORMAL,
    EventType.TASK_UPDATED: Priority.NORMAL,
    EventType.EMERGENCY_ALERT: Priority.EMERGENCY,
    # Critical, not high: the all-clear gets the alarm's delivery guarantees (never conflated or
    # dropped, re-sent until each device acks), since a device that missed it goes on acting on the
    # alarm (docs/decisions/0011).
    EventType.EMERGENCY_RESOLVED: Priority.CRITICAL,
    EventType.ALERT_RAISED: Priority.CRITICAL,
    EventType.ALERT_RESOLVED: Priority.HIGH,
    EventType.RECORD_CREATED: Priority.HIGH,
    EventType.RECORD_UPDATED: Priority.HIGH,
    EventType.RECORD_DELETED: Priority.HIGH,
    EventType.RECORD_CONFLICT: Priority.HIGH,
    EventType.CONFLICT_RESOLVED: Priority.HIGH,
}

# The ``data`` field that marks an ``emergency.alert`` as a repeat of the sender's open emergency
# (its value counts the repeats): stored and sent, but neither re-sent nor escalated (decision 0011).
EMERGENCY_REPEAT_FIELD = "repeat"

# The permission a member needs to publish each client type (``None``: see the audience rules).
PUBLISH_PERMISSION: dict[EventType, Permission | None] = {
    EventType.CHAT_MESSAGE: Permission.CHAT,
    EventType.VENDOR_STATUS: None,  # vendors about themselves, planner and couple about anyone
    EventType.EMERGENCY_ALERT: Permission.SEND_EMERGENCY,
}

# --- Channel-layer groups and message types (server-internal) ----------------------------------------
# Fan-out crosses the channel layer once per node: a node's channel joins the group of every wedding
# it has subscribers for, and the node hands each event to its local sockets (docs/architecture.md).


def wedding_group(wedding_id: int) -> str:
    return f"wedding.{wedding_id}"


# Every node's channel is in this group: control messages (revocations, device limits) go here.
NODES_GROUP = "nodes"

LAYER_EVENT = "wedding.event"
LAYER_CONTROL = "node.control"
LAYER_PRESENCE = "wedding.presence"
