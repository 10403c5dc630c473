"""Presence writes: a device joins, updates, is heard, leaves, or is swept away; each real change
is told to every node (``tell``: batched by the node's hub, or sent at once by a process without one).

Presence is not an event: it is not stored in the event log, has no ``seq`` and is not replayed
(a subscriber gets a snapshot instead). So its diffs bypass ``event_publish`` and go straight to
the nodes, after the Redis transaction that made them (docs/decisions/0008).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from presence.selectors import wedding_emergency_open
from presence.state import DevicePresence, DiffKind, StateChange
from presence.store import Devices, MemberChange, MemberUpdate, member_update, presence_store
from presence.vocabulary import PresenceStatus
from realtime.layer_send import layer_group_send
from realtime.messages import PresenceBatch, PresenceEntry
from realtime.names import NODES_GROUP
from wedsync.models import AuditOutcome
from wedsync.permissions import Permission, Role, role_has_permission
from wedsync.refusals import Refused
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

logger = structlog.get_logger(__name__)

SWEEP_BATCH = 1000


class PresenceRefused(Refused):
    """A refused presence change: nothing was changed."""


# How a change is told: the node's hub batches changes made in its own process (NodePresence.tell);
# a process without one (the beat sweep) sends them to the layer itself (presence_tell_layer).
Tell = Callable[[MemberChange], None]


def presence_entry(change: MemberChange) -> PresenceEntry | None:
    """One change worth telling as it crosses the channel layer (None for one that is not)."""
    if change.kind is None:
        return None
    if change.kind is DiffKind.LEAVE:
        gone = change.before if change.after is None else change.after
        if gone is None:
            return None
        state = replace(gone, status=PresenceStatus.OFFLINE, devices=0 if change.after is None else gone.devices)
    else:
        if change.after is None:
            return None
        state = change.after
    return PresenceEntry(
        wedding=change.wedding_id,
        member=change.member_id,
        kind=change.kind.value,
        role=state.role,
        state=state.wire(),
        v=change.version,
    )


def presence_tell_layer(changes: list[MemberChange]) -> None:
    """Send changes to every node at once, from a synchronous caller without a hub; never waits
    for Redis nor fails the caller (presence heals on the next change or snapshot)."""
    entries = [entry for change in changes if (entry := presence_entry(change)) is not None]
    if entries:
        layer_group_send(NODES_GROUP, PresenceBatch(entries=entries))


def _tell_now(change: MemberChange) -> None:
    presence_tell_layer([change])


def presence_device_join(*, device: DevicePresence, now: float | None = None, tell: Tell = _tell_now) -> MemberChange:
    """A subscribed socket's device comes online in its wedding (or is heard again)."""
    return presence_devices_join(devices=[device], now=now, tell=tell)[0]


def presence_devices_join(
    *, devices: list[DevicePresence], now: float | None = None, tell: Tell = _tell_now
) -> list[MemberChange]:
    """Devices come online in their weddings (or are heard again), in one store batch."""
    moment = time.time() if now is None else now

    def joining(device: DevicePresence) -> Callable[[Devices], Devices]:
        def join(current: Devices) -> Devices:
            previous = current.get(device.device)
            if previous is None:
                current[device.device] = replace(device, last_seen=max(device.last_seen, moment))
            else:  # heard again after it was counted gone: keep what it had set
                current[device.device] = replace(previous, last_seen=max(device.last_seen, moment), node=device.node)
            return current

        return join

    updates = [MemberUpdate(device.wedding_id, device.member_id, joining(device)) for device in devices]
    return _members_apply(updates=updates, now=moment, tell=tell)


def presence_device_leave(
    *, wedding_id: int, member_id: int, device: str, now: float | None = None, tell: Tell = _tell_now
) -> MemberChange:
    """A device goes: its socket closed or unsubscribed."""
    return presence_devices_leave(devices=[(wedding_id, member_id, device)], now=now, tell=tell)[0]


def presence_devices_leave(
    *, devices: list[tuple[int, int, str]], now: float | None = None, tell: Tell = _tell_now
) -> list[MemberChange]:
    """Devices (wedding, member, device) go, in one store batch."""
    moment = time.time() if now is None else now

    def leaving(device: str) -> Callable[[Devices], Devices]:
        def leave(current: Devices) -> Devices:
            current.pop(device, None)
            return current

        return leave

    updates = [MemberUpdate(wedding_id, member_id, leaving(device)) for wedding_id, member_id, device in devices]
    return _members_apply(updates=updates, now=moment, tell=tell)


def _members_apply(*, updates: list[MemberUpdate], now: float, tell: Tell) -> list[MemberChange]:
    """One store batch of ``updates``, each change told in order."""
    changes = presence_store().members_update(updates=updates, now=now)
    for change in changes:
        tell(change)
    return changes


def presence_device_rtt(
    *, wedding_id: int, member_id: int, device: str, rtt_ms: int, now: float | None = None, tell: Tell = _tell_now
) -> MemberChange:
    """Keep the round trip a device measured; told only when the connection's quality class moves."""
    moment = time.time() if now is None else now

    def measured(devices: Devices) -> Devices:
        if device in devices:
            devices[device] = replace(devices[device], rtt_ms=rtt_ms, last_seen=max(devices[device].last_seen, moment))
        return devices

    change = member_update(presence_store(), wedding_id=wedding_id, member_id=member_id, mutate=measured, now=moment)
    tell(change)
    return change


def presence_state_set(
    *,
    wedding_id: int,
    member_id: int,
    role: str,
    user_id: int,
    device: str,
    state: StateChange,
    client: ClientInfo | None = None,
    now: float | None = None,
    tell: Tell = _tell_now,
) -> MemberChange:
    """The ``presence`` op: check what the member may set, then update its device.

    A location needs ``share_location``; while an emergency is open anyone may share one (each such
    use audited). Activities are the vendors' (PROTOCOL.md section 6). Refusals are audited and
    raised as :class:`PresenceRefused`; nothing is changed then.
    """
    if state.location is not None and not role_has_permission(role=role, permission=Permission.SHARE_LOCATION):
        if not wedding_emergency_open(wedding_id=wedding_id):
            _refusal_audit(user_id=user_id, wedding_id=wedding_id, member_id=member_id, role=role, client=client)
            raise PresenceRefused(code="forbidden", message=f"A {role} may not share a location.")
        audit_record(
            action=AuditAction.PRESENCE_EMERGENCY_LOCATION,
            outcome=AuditOutcome.SUCCESS,
            wedding_id=wedding_id,
            target=f"member:{member_id}",
            client=client,
            details={"user": user_id, "member": member_id, "role": role, "location": state.location},
        )
    if state.activity is not None and not (Role(role).is_vendor or role == Role.PLANNER):
        raise PresenceRefused(code="forbidden", message=f"Activities are for vendors; a {role} has none.")
    moment = time.time() if now is None else now

    def update(devices: Devices) -> Devices:
        current = devices.get(device)
        if current is None:
            raise PresenceRefused(code="not_subscribed", message="This device is not present in the wedding.")
        devices[device] = state.apply(current, now=moment)
        return devices

    result = member_update(presence_store(), wedding_id=wedding_id, member_id=member_id, mutate=update, now=moment)
    tell(result)
    return result


def _refusal_audit(*, user_id: int, wedding_id: int, member_id: int, role: str, client: ClientInfo | None) -> None:
    audit_record(
        action=AuditAction.PRESENCE_REFUSE,
        outcome=AuditOutcome.REFUSED,
        wedding_id=wedding_id,
        target=f"member:{member_id}",
        client=client,
        details={"user": user_id, "member": member_id, "role": role, "reason": "share_location"},
    )


def presence_heartbeat(
    *,
    node: str,
    seen: list[DevicePresence],
    node_ttl: int,
    tell: Tell = _tell_now,
    still_present: Callable[[DevicePresence], bool] = lambda _device: True,
) -> list[MemberChange]:
    """A node's batch of heard devices: deadlines pushed forward, node kept alive; devices the store
    had already counted gone (a long silence, the sweep) join again with what they had set, unless
    their socket left meanwhile (``still_present``)."""
    missing = presence_store().heartbeat(node=node, seen=seen, node_ttl=node_ttl, now=time.time())
    rejoining = [device for device in missing if still_present(device)]
    return presence_devices_join(devices=rejoining, tell=tell) if rejoining else []


def _expire(*, wedding_id: int, member_id: int, device: str, node: str | None, now: float) -> MemberChange:
    def expire(devices: Devices) -> Devices:
        # The store has dropped the devices past their deadline already (one heard since the
        # sweep listed it stays); this takes a dead node's device whatever its deadline.
        current = devices.get(device)
        if node is not None and current is not None and current.node == node:
            devices.pop(device)
        return devices

    store = presence_store()
    change = member_update(store, wedding_id=wedding_id, member_id=member_id, mutate=expire, now=now)
    store.entry_forget(wedding_id=wedding_id, member_id=member_id, device=device)
    return change


def presence_sweep(
    *, now: float | None = None, tell: Callable[[list[MemberChange]], None] = presence_tell_layer
) -> int:
    """Take away devices that missed their heartbeats and those of nodes that died without a word,
    telling their leaves (all of one sweep in one batch). Idempotent and safe on several workers at
    once: each member's change is one optimistic transaction, so only the first sweeper to remove a
    device tells anyone."""
    moment = time.time() if now is None else now
    store = presence_store()
    changes = [
        _expire(wedding_id=wedding_id, member_id=member_id, device=device, node=None, now=moment)
        for wedding_id, member_id, device in store.due(now=moment, limit=SWEEP_BATCH)
    ]
    for node, entries in store.dead_nodes().items():
        logger.info("presence.node_dead", node=node, devices=len(entries))
        changes += [
            _expire(wedding_id=wedding_id, member_id=member_id, device=device, node=node, now=moment)
            for wedding_id, member_id, device in entries
        ]
        store.node_forget(node=node)
    told = [change for change in changes if change.kind is not None]
    tell(told)
    return len(told)
