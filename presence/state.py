"""Presence as values: one device's state, a member's state merged over its devices, and what
counts as a change worth telling anyone (PROTOCOL.md section 6).

Plain functions over plain data, shared by the Redis store and the in-process one, so both merge
and throttle exactly alike.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from presence.vocabulary import PresenceStatus

MISSED_HEARTBEATS = 2.5  # a device not heard for this many heartbeat intervals is offline
BATTERY_STEP = 5  # battery changes are told when they cross a multiple of this
LOW_BATTERY = 15  # ... or cross this line, whatever the step
RTT_SLOW_MS = 300  # connection quality classes (rtt): good below, fair up to RTT_POOR_MS, poor above
RTT_POOR_MS = 1000

_STATUS_RANK = {
    PresenceStatus.ONLINE: 4,
    PresenceStatus.BUSY: 3,
    PresenceStatus.AWAY: 2,
    PresenceStatus.OFFLINE: 1,
}


@dataclass(frozen=True, slots=True)
class DevicePresence:
    """One socket's presence in one wedding (a device is a connection)."""

    wedding_id: int
    member_id: int
    role: str
    device: str  # the connection id
    node: str  # the server process holding the socket
    heartbeat_interval: int  # seconds
    last_seen: float  # epoch seconds the device was last heard from
    status: PresenceStatus = PresenceStatus.ONLINE
    location: str | None = None
    activity: str | None = None
    battery: int | None = None
    charging: bool | None = None
    updated_at: float = 0.0  # epoch seconds of the device's last ``presence`` update
    client_device: str = ""  # the client's own stable name for the device (``?device=``), if given
    rtt_ms: int | None = None  # the heartbeat round trip the client last measured
    reconnects: int = 0  # connects of this device (or user agent) in the last hour, minus one

    @property
    def deadline(self) -> float:
        return self.last_seen + MISSED_HEARTBEATS * self.heartbeat_interval

    @property
    def device_key(self) -> str:
        """What identifies the device across reconnects: its own name if it gave one."""
        return self.client_device or self.device

    def to_json(self) -> dict[str, Any]:
        return {
            "w": self.wedding_id,
            "m": self.member_id,
            "r": self.role,
            "d": self.device,
            "n": self.node,
            "i": self.heartbeat_interval,
            "s": self.last_seen,
            "st": self.status.value,
            "l": self.location,
            "a": self.activity,
            "b": self.battery,
            "c": self.charging,
            "u": self.updated_at,
            "cd": self.client_device,
            "rtt": self.rtt_ms,
            "rc": self.reconnects,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DevicePresence:
        return cls(
            wedding_id=raw["w"],
            member_id=raw["m"],
            role=raw["r"],
            device=raw["d"],
            node=raw["n"],
            heartbeat_interval=raw["i"],
            last_seen=raw["s"],
            status=PresenceStatus(raw["st"]),
            location=raw["l"],
            activity=raw["a"],
            battery=raw["b"],
            charging=raw["c"],
            updated_at=raw["u"],
            client_device=raw.get("cd", ""),
            rtt_ms=raw.get("rtt"),
            reconnects=raw.get("rc", 0),
        )


@dataclass(frozen=True, slots=True)
class StateChange:
    """The fields a ``presence`` op sets on its device; None leaves a field as it was."""

    status: PresenceStatus | None = None
    location: str | None = None
    activity: str | None = None
    battery: int | None = None
    charging: bool | None = None
    clear: frozenset[str] = field(default_factory=frozenset)  # fields the client set to null

    def apply(self, device: DevicePresence, *, now: float) -> DevicePresence:
        values: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("status", "location", "activity", "battery", "charging")
            if getattr(self, name) is not None
        }
        values.update(dict.fromkeys(self.clear))
        return replace(device, **values, updated_at=now, last_seen=max(device.last_seen, now))


class Quality(enum.StrEnum):
    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"


def quality_of(rtt_ms: int | None, reconnects: int) -> Quality:
    if (rtt_ms is not None and rtt_ms > RTT_POOR_MS) or reconnects >= 5:
        return Quality.POOR
    if (rtt_ms is not None and rtt_ms > RTT_SLOW_MS) or reconnects >= 2:
        return Quality.FAIR
    return Quality.GOOD


@dataclass(frozen=True, slots=True)
class MemberPresence:
    """A member's presence in a wedding, merged over its devices: what subscribers are told."""

    member_id: int
    role: str
    status: PresenceStatus
    location: str | None
    activity: str | None
    battery: int | None
    charging: bool | None
    devices: int
    last_seen: float
    rtt_ms: int | None = None  # the worst round trip among its devices
    reconnects: int = 0  # the most among its devices

    @property
    def is_online(self) -> bool:
        return self.devices > 0 and self.status is not PresenceStatus.OFFLINE

    @property
    def quality(self) -> Quality:
        return quality_of(self.rtt_ms, self.reconnects)

    def wire(self, *, with_location: bool = True) -> dict[str, Any]:
        """The member's entry in snapshots and ``presence_diff`` frames."""
        return {
            "role": self.role,
            "status": self.status.value,
            "location": self.location if with_location else None,
            "activity": self.activity,
            "battery": self.battery,
            "charging": self.charging,
            "devices": self.devices,
            "last_seen": _iso(self.last_seen),
            "connection": {"quality": self.quality.value, "rtt_ms": self.rtt_ms, "reconnects": self.reconnects},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "m": self.member_id,
            "r": self.role,
            "st": self.status.value,
            "l": self.location,
            "a": self.activity,
            "b": self.battery,
            "c": self.charging,
            "n": self.devices,
            "s": self.last_seen,
            "rtt": self.rtt_ms,
            "rc": self.reconnects,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MemberPresence:
        return cls(
            member_id=raw["m"],
            role=raw["r"],
            status=PresenceStatus(raw["st"]),
            location=raw["l"],
            activity=raw["a"],
            battery=raw["b"],
            charging=raw["c"],
            devices=raw["n"],
            last_seen=raw["s"],
            rtt_ms=raw.get("rtt"),
            reconnects=raw.get("rc", 0),
        )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _newest(devices: list[DevicePresence], name: str) -> Any:
    """The field's value on the most recently updated device that has one."""
    for device in sorted(devices, key=lambda d: (d.updated_at, d.last_seen), reverse=True):
        value = getattr(device, name)
        if value is not None:
            return value
    return None


def member_merge(devices: list[DevicePresence]) -> MemberPresence | None:
    """A member's presence over its live devices; None when it has none.

    Online if any device is (status: the most present of the devices'), location and activity
    from the most recently updated device that set them, battery and charging from the device
    that reported battery last, quality from the worst device.
    """
    if not devices:
        return None
    first = devices[0]
    battery_device = next(
        (d for d in sorted(devices, key=lambda d: (d.updated_at, d.last_seen), reverse=True) if d.battery is not None),
        None,
    )
    rtts = [d.rtt_ms for d in devices if d.rtt_ms is not None]
    return MemberPresence(
        member_id=first.member_id,
        role=first.role,
        status=max((d.status for d in devices), key=_STATUS_RANK.__getitem__),
        location=_newest(devices, "location"),
        activity=_newest(devices, "activity"),
        battery=None if battery_device is None else battery_device.battery,
        charging=None if battery_device is None else battery_device.charging,
        devices=len(devices),
        last_seen=max(d.last_seen for d in devices),
        rtt_ms=max(rtts) if rtts else None,
        reconnects=max(d.reconnects for d in devices),
    )


class DiffKind(enum.StrEnum):
    JOIN = "joins"
    UPDATE = "updates"
    LEAVE = "leaves"


def _battery_band(battery: int | None) -> tuple[int, bool] | None:
    return None if battery is None else (battery // BATTERY_STEP, battery < LOW_BATTERY)


def presence_diff_kind(before: MemberPresence | None, after: MemberPresence | None) -> DiffKind | None:
    """What subscribers must be told when a member's published state ``before`` becomes ``after``:
    a join, a leave, an update, or nothing (heartbeats, battery inside its band, last_seen)."""
    if before is None or not before.is_online:
        return DiffKind.JOIN if after is not None and after.is_online else None
    if after is None or not after.is_online:
        return DiffKind.LEAVE
    worth_telling = (
        before.status != after.status
        or before.location != after.location
        or before.activity != after.activity
        or before.charging != after.charging
        or before.devices != after.devices
        or before.role != after.role
        or _battery_band(before.battery) != _battery_band(after.battery)
        or before.quality != after.quality
    )
    return DiffKind.UPDATE if worth_telling else None
