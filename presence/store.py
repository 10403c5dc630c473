"""Where presence lives: Redis, so every node sees it (an in-process store only for the embedded
single-process mode), behind one interface.

Redis layout (docs/decisions/0008):

- ``wedsync:presence:<wedding>:<member>``: hash, one field per device (its JSON) plus ``_pub``,
  the member's state as last told to subscribers and its version. One WATCHed key per member is
  the unit of change: a device joining, updating, leaving or expiring re-merges the member and
  compares with ``_pub`` in one optimistic transaction, so two nodes changing one member's
  devices at once cannot both announce (or both miss) the change.
- ``wedsync:presence:<wedding>:alive``: sorted set of the members with devices, scored by their
  latest device deadline; ``wedsync:presence:<wedding>:told``: hash of each member's ``_pub``,
  copied in the same transaction. A snapshot is these two reads, whatever the wedding's size.
- ``wedsync:presence:deadlines``: sorted set of ``<wedding>:<member>:<device>`` scored by the time
  the device counts as gone unless heard again. Heartbeats only push scores forward; readers
  treat a passed deadline as gone even before the sweep removes it, so nothing stays online
  forever if every process dies.
- ``wedsync:presence:node:<node>`` / ``wedsync:presence:nodes``: each node's devices, so the sweep
  can drop a node's devices at once when its ``wedsync:node-alive:<node>`` key expires.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import msgspec
import redis
import structlog
from django.conf import settings

from presence.state import DevicePresence, DiffKind, MemberPresence, member_merge, presence_diff_kind
from wedsync.redis_clients import redis_client
from wedsync.redis_keys import (
    PRESENCE_DEADLINES,
    PRESENCE_NODE_PREFIX,
    PRESENCE_NODES,
    node_alive_key,
    presence_alive_members_key,
    presence_member_key,
    presence_node_key,
    presence_told_key,
)

logger = structlog.get_logger(__name__)

KEY_TTL_SECONDS = 2 * 24 * 3600  # a member's hash outlives any wedding day, then goes by itself
MAX_RETRIES = 20
# Members changed in one optimistic transaction: a reconnect storm's joins and leaves go in a few
# round trips instead of four each; a conflict splits the batch in halves down to single members.
BATCH_MAX = 200

Devices = dict[str, DevicePresence]
Mutation = Callable[[Devices], Devices]


class MemberUpdate(NamedTuple):
    """One member's change in a batch: ``mutate`` gets its live devices and returns the new ones."""

    wedding_id: int
    member_id: int
    mutate: Mutation


@dataclass(frozen=True, slots=True)
class MemberChange:
    """What one change did to a member: its told state before and after, and whether to tell."""

    wedding_id: int
    member_id: int
    before: MemberPresence | None
    after: MemberPresence | None
    kind: DiffKind | None
    version: int  # of ``after`` when told; versions only grow, so late diffs can be dropped


def _entry(wedding_id: int, member_id: int, device: str) -> str:
    return f"{wedding_id}:{member_id}:{device}"


def _parse_entry(entry: str) -> tuple[int, int, str]:
    wedding, member, device = entry.split(":", 2)
    return int(wedding), int(member), device


def _next_version(previous: int, now: float) -> int:
    # Milliseconds, and always past the previous: a member whose keys expired starts above any
    # version a node may still remember.
    return max(previous + 1, int(now * 1000))


def _change(
    *, wedding_id: int, member_id: int, devices: Devices, published: tuple[MemberPresence | None, int], now: float
) -> MemberChange:
    before, version = published
    after = member_merge(list(devices.values()))
    kind = presence_diff_kind(before, after)
    return MemberChange(
        wedding_id=wedding_id,
        member_id=member_id,
        before=before,
        after=after,
        kind=kind,
        version=_next_version(version, now) if kind is not None else version,
    )


class ToldWire(NamedTuple):
    """A member's told state as subscribers see it on the wire (snapshots)."""

    member_id: int
    role: str
    wire: dict[str, Any]
    version: int


class PresenceStore(Protocol):
    def members_update(self, *, updates: list[MemberUpdate], now: float) -> list[MemberChange]:
        """Apply each update's ``mutate`` to its member's live devices (expired ones already
        dropped) and store the results, in order (a member named twice sees its first change);
        a member's told state moves only when the change is worth telling. One change per update."""
        ...

    def devices(self, *, wedding_id: int, now: float) -> list[DevicePresence]:
        """The wedding's live devices, with their last heartbeat."""
        ...

    def told(self, *, wedding_id: int, now: float) -> dict[int, tuple[MemberPresence, int]]:
        """Each member's state as last told to subscribers, with its version: members with at least
        one live device only, so a node that died leaves nobody online even before the sweep."""
        ...

    def told_wire(self, *, wedding_ids: list[int], now: float) -> dict[int, list[ToldWire]]:
        """The same members as :meth:`told`, in their wire form, for each wedding (one round trip)."""
        ...

    def heartbeat(self, *, node: str, seen: list[DevicePresence], node_ttl: int, now: float) -> list[DevicePresence]:
        """Push the deadlines of ``seen`` devices forward and keep the node alive; returns those
        the store no longer has or counts as gone (past their deadline), which the node joins again."""
        ...

    def entry_forget(self, *, wedding_id: int, member_id: int, device: str) -> None:
        """Drop a device's deadline and node entries when its member no longer holds it (the sweep's
        clean-up: an entry left behind would be due for ever)."""
        ...

    def due(self, *, now: float, limit: int) -> list[tuple[int, int, str]]:
        """(wedding, member, device) of devices whose deadline has passed."""
        ...

    def dead_nodes(self) -> dict[str, list[tuple[int, int, str]]]:
        """The devices of nodes that stopped saying they are alive."""
        ...

    def node_forget(self, *, node: str) -> None: ...


def member_update(
    store: PresenceStore, *, wedding_id: int, member_id: int, mutate: Mutation, now: float
) -> MemberChange:
    """One member's :meth:`PresenceStore.members_update`."""
    return store.members_update(updates=[MemberUpdate(wedding_id, member_id, mutate)], now=now)[0]


def _rounds(updates: list[MemberUpdate]) -> list[list[tuple[int, MemberUpdate]]]:
    """The updates (with their index) in rounds of distinct members, in order: a member's second
    update waits for the next round, so it sees the first one's result."""
    rounds: list[list[tuple[int, MemberUpdate]]] = []
    depth: dict[tuple[int, int], int] = {}
    for index, update in enumerate(updates):
        key = (update.wedding_id, update.member_id)
        level = depth[key] = depth.get(key, -1) + 1
        if level == len(rounds):
            rounds.append([])
        rounds[level].append((index, update))
    return rounds


# --- Redis ----------------------------------------------------------------------------------------

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode

# Heartbeats of a node's devices in one round trip: push forward the deadlines of those still
# there and their members' (never back: GT), report the missing ones, keep the node alive.
# ARGV: node ttl, then (deadline, entry, member) per device; KEYS: deadlines, node alive key,
# then each device's wedding ``alive`` set.
_HEARTBEAT_LUA = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
local now, key_ttl = tonumber(ARGV[2]), ARGV[3]
local missing = {}
for i = 4, #ARGV, 3 do
    local k = 2 * ((i - 1) / 3)  -- the device's two keys: KEYS[k + 1] its wedding's alive set, KEYS[k + 2] its member
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
    if score and tonumber(score) >= now then
        redis.call('ZADD', KEYS[1], 'GT', ARGV[i], ARGV[i + 1])
        redis.call('ZADD', KEYS[k + 1], 'GT', ARGV[i], ARGV[i + 2])
        redis.call('EXPIRE', KEYS[k + 2], key_ttl)
        redis.call('EXPIRE', KEYS[k + 1], key_ttl)
    else
        missing[#missing + 1] = ARGV[i + 1]
    end
end
return missing
"""

# A batch's read, in one round trip under the caller's WATCH: each member's hash, field by field
# with the device's deadline (false for ``_pub``). KEYS: deadlines, then the members' hashes;
# ARGV: each member's entry prefix ``<wedding>:<member>:``.
_MEMBERS_READ_LUA = """
local result = {}
for i = 1, #ARGV do
    local fields = redis.call('HGETALL', KEYS[i + 1])
    local member = {}
    for j = 1, #fields, 2 do
        local name = fields[j]
        member[#member + 1] = name
        member[#member + 1] = fields[j + 1]
        if name == '_pub' then
            member[#member + 1] = false
        else
            member[#member + 1] = redis.call('ZSCORE', KEYS[1], ARGV[i] .. name)
        end
    end
    result[i] = member
end
return result
"""

# The sweep's clean-up of an entry whose member hash no longer holds the device.
_ENTRY_FORGET_LUA = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
for _, node in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('SREM', ARGV[3] .. node, ARGV[1])
end
if redis.call('EXISTS', KEYS[2]) == 0 then  -- the member's hash is gone: so is what it told
    redis.call('ZREM', KEYS[4], ARGV[4])
    redis.call('HDEL', KEYS[5], ARGV[4])
end
return 1
"""


class RedisPresenceStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._heartbeat_script = client.register_script(_HEARTBEAT_LUA)
        self._entry_forget_script = client.register_script(_ENTRY_FORGET_LUA)

    def members_update(self, *, updates: list[MemberUpdate], now: float) -> list[MemberChange]:
        changes: list[MemberChange | None] = [None] * len(updates)
        for round_ in _rounds(updates):
            for start in range(0, len(round_), BATCH_MAX):
                chunk = round_[start : start + BATCH_MAX]
                for (index, _update), change in zip(
                    chunk, self._update_chunk([u for _i, u in chunk], now), strict=True
                ):
                    changes[index] = change
        return [change for change in changes if change is not None]

    def _update_chunk(self, updates: list[MemberUpdate], now: float, attempts: int = MAX_RETRIES) -> list[MemberChange]:
        """Distinct members' updates as one optimistic transaction: WATCH their hashes, read them
        and their deadlines in one script call, write everything in one MULTI/EXEC."""
        keys = [presence_member_key(wedding_id=u.wedding_id, member_id=u.member_id) for u in updates]
        for _attempt in range(attempts):
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*keys)  # type: ignore[no-untyped-call]
                    read = pipe.eval(
                        _MEMBERS_READ_LUA,
                        len(keys) + 1,
                        PRESENCE_DEADLINES,
                        *keys,
                        *[_entry(u.wedding_id, u.member_id, "") for u in updates],
                    )
                    planned = [self._plan(update, raw, now) for update, raw in zip(updates, read, strict=True)]
                    pipe.multi()
                    for update, (stored, after_devices, change) in zip(updates, planned, strict=True):
                        self._write(pipe, update.wedding_id, update.member_id, stored, after_devices, change)
                    pipe.execute()
                    return [change for _stored, _after, change in planned]
                except redis.WatchError:
                    if len(updates) > 1:  # someone changed one of them: retry in halves, not all again
                        half = len(updates) // 2
                        return self._update_chunk(updates[:half], now) + self._update_chunk(updates[half:], now)
                    continue
        raise RuntimeError(f"presence of member {updates[0].member_id} kept changing under {attempts} attempts")

    @staticmethod
    def _plan(update: MemberUpdate, raw: list[bytes | None], now: float) -> tuple[Devices, Devices, MemberChange]:
        """From a member's hash and deadlines as read (name, value, deadline per field): what it
        stores, its devices after ``mutate``, and the change."""
        stored: Devices = {}
        deadlines: dict[str, float] = {}
        published_raw = None
        for position in range(0, len(raw), 3):
            name, value, deadline = raw[position].decode(), raw[position + 1], raw[position + 2]  # type: ignore[union-attr]
            if name == "_pub":
                published_raw = value
                continue
            stored[name] = DevicePresence.from_json(_json_decode(value))  # type: ignore[arg-type]
            if deadline is not None:
                deadlines[name] = float(deadline)
        live = {name: device for name, device in stored.items() if deadlines.get(name, device.deadline) >= now}
        for name, device in live.items():  # the heartbeat the deadline carries
            heard = deadlines.get(name)
            if heard is not None and heard > device.deadline:
                live[name] = _with_deadline(device, heard)
        after = update.mutate(dict(live))
        change = _change(
            wedding_id=update.wedding_id,
            member_id=update.member_id,
            devices=after,
            published=_told_from(published_raw),
            now=now,
        )
        return stored, after, change

    @staticmethod
    def _write(
        pipe: Any, wedding_id: int, member_id: int, stored: Devices, after: Devices, change: MemberChange
    ) -> None:
        key = presence_member_key(wedding_id=wedding_id, member_id=member_id)
        gone = [name for name in stored if name not in after]
        if gone:
            pipe.hdel(key, *gone)
            pipe.zrem(PRESENCE_DEADLINES, *[_entry(wedding_id, member_id, name) for name in gone])
            for name in gone:
                pipe.srem(presence_node_key(node=stored[name].node), _entry(wedding_id, member_id, name))
        for name, device in after.items():
            entry = _entry(wedding_id, member_id, name)
            pipe.hset(key, name, _json_encode(device.to_json()))
            pipe.zadd(PRESENCE_DEADLINES, {entry: device.deadline}, gt=name in stored)
            if name not in stored:
                pipe.sadd(presence_node_key(node=device.node), entry)
                pipe.sadd(PRESENCE_NODES, device.node)
                # A node's first heartbeat may still be on its way: its own device proves it alive.
                pipe.set(node_alive_key(node=device.node), "1", ex=settings.REALTIME_PRESENCE_NODE_TTL, nx=True)
        if change.kind is not None:
            after_state = change.after if change.after is not None and change.after.is_online else None
            told = None if after_state is None else after_state.to_json()
            pipe.hset(key, "_pub", _json_encode({"state": told, "v": change.version}))
            if after_state is None:
                pipe.hdel(presence_told_key(wedding_id=wedding_id), member_id)
            else:
                # With its wire form, so a snapshot decodes each member once and renders nothing.
                mirrored = {"state": told, "v": change.version, "r": after_state.role, "w": after_state.wire()}
                pipe.hset(presence_told_key(wedding_id=wedding_id), member_id, _json_encode(mirrored))
        alive = presence_alive_members_key(wedding_id=wedding_id)
        if after:
            # Only a device going can lower the member's latest deadline; otherwise never move it
            # back past what a heartbeat batch may have pushed meanwhile.
            pipe.zadd(alive, {member_id: max(d.deadline for d in after.values())}, gt=not gone)
            for name in (key, alive, presence_told_key(wedding_id=wedding_id)):
                pipe.expire(name, KEY_TTL_SECONDS)
        elif change.kind is not None or stored:
            pipe.zrem(alive, member_id)
            pipe.expire(key, KEY_TTL_SECONDS)  # keeps the version a little, so it keeps growing

    def devices(self, *, wedding_id: int, now: float) -> list[DevicePresence]:
        alive: list[bytes] = self._redis.zrangebyscore(presence_alive_members_key(wedding_id=wedding_id), now, "+inf")  # type: ignore[assignment]
        members = [int(m) for m in alive]
        if not members:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for member_id in members:
                pipe.hgetall(presence_member_key(wedding_id=wedding_id, member_id=member_id))
            hashes = pipe.execute()
        found = [
            DevicePresence.from_json(_json_decode(value))
            for raw in hashes
            for name, value in raw.items()
            if name != b"_pub"
        ]
        entries = [_entry(wedding_id, d.member_id, d.device) for d in found]
        scores = self._redis.zmscore(PRESENCE_DEADLINES, entries) if entries else []
        live = []
        for device, score in zip(found, scores, strict=True):
            if score is None or score < now:
                continue
            live.append(_with_deadline(device, score) if score > device.deadline else device)
        return live

    def _told_raw(self, wedding_ids: list[int], now: float) -> dict[int, list[dict[str, Any]]]:
        with self._redis.pipeline(transaction=False) as pipe:
            for wedding_id in wedding_ids:
                pipe.hgetall(presence_told_key(wedding_id=wedding_id))
                pipe.zrangebyscore(presence_alive_members_key(wedding_id=wedding_id), now, "+inf")
            replies = pipe.execute()
        found = {}
        for index, wedding_id in enumerate(wedding_ids):
            raw, alive = replies[2 * index], set(replies[2 * index + 1])
            found[wedding_id] = [
                _json_decode(value) | {"m": int(member)} for member, value in raw.items() if member in alive
            ]
        return found

    def told(self, *, wedding_id: int, now: float) -> dict[int, tuple[MemberPresence, int]]:
        return {
            told["m"]: (MemberPresence.from_json(told["state"]), told["v"])
            for told in self._told_raw([wedding_id], now)[wedding_id]
        }

    def told_wire(self, *, wedding_ids: list[int], now: float) -> dict[int, list[ToldWire]]:
        return {
            wedding_id: [ToldWire(told["m"], told["r"], told["w"], told["v"]) for told in raw]
            for wedding_id, raw in self._told_raw(wedding_ids, now).items()
        }

    def heartbeat(self, *, node: str, seen: list[DevicePresence], node_ttl: int, now: float) -> list[DevicePresence]:
        args: list[Any] = [node_ttl, now, KEY_TTL_SECONDS]
        keys = [PRESENCE_DEADLINES, node_alive_key(node=node)]
        for device in seen:
            args += [device.deadline, _entry(device.wedding_id, device.member_id, device.device), device.member_id]
            keys += [
                presence_alive_members_key(wedding_id=device.wedding_id),
                presence_member_key(wedding_id=device.wedding_id, member_id=device.member_id),
            ]
        missing = self._heartbeat_script(keys=keys, args=args)
        gone = {entry.decode() if isinstance(entry, bytes) else entry for entry in missing}
        return [d for d in seen if _entry(d.wedding_id, d.member_id, d.device) in gone]

    def entry_forget(self, *, wedding_id: int, member_id: int, device: str) -> None:
        self._entry_forget_script(
            keys=[
                PRESENCE_DEADLINES,
                presence_member_key(wedding_id=wedding_id, member_id=member_id),
                PRESENCE_NODES,
                presence_alive_members_key(wedding_id=wedding_id),
                presence_told_key(wedding_id=wedding_id),
            ],
            args=[_entry(wedding_id, member_id, device), device, PRESENCE_NODE_PREFIX, member_id],
        )

    def due(self, *, now: float, limit: int) -> list[tuple[int, int, str]]:
        entries = self._redis.zrangebyscore(PRESENCE_DEADLINES, "-inf", now, start=0, num=limit)
        return [_parse_entry(e.decode()) for e in entries]  # type: ignore[union-attr]

    def dead_nodes(self) -> dict[str, list[tuple[int, int, str]]]:
        nodes = [n.decode() for n in self._redis.smembers(PRESENCE_NODES)]  # type: ignore[union-attr]
        result = {}
        for node in nodes:
            if not self._redis.exists(node_alive_key(node=node)):
                entries = self._redis.smembers(presence_node_key(node=node))
                result[node] = [_parse_entry(e.decode()) for e in entries]  # type: ignore[union-attr]
        return result

    def node_forget(self, *, node: str) -> None:
        # Only when the node is still dead and has nothing left: it may have come back meanwhile.
        with self._redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(node_alive_key(node=node), presence_node_key(node=node))  # type: ignore[no-untyped-call]
                if pipe.exists(node_alive_key(node=node)) or pipe.scard(presence_node_key(node=node)):
                    return
                pipe.multi()
                pipe.srem(PRESENCE_NODES, node)
                pipe.execute()
            except redis.WatchError:
                return


def _with_deadline(device: DevicePresence, deadline: float) -> DevicePresence:
    return replace(device, last_seen=deadline - (device.deadline - device.last_seen))


def _told_from(raw: bytes | None) -> tuple[MemberPresence | None, int]:
    if raw is None:
        return None, 0
    value = _json_decode(raw)
    state = value.get("state")
    return (None if state is None else MemberPresence.from_json(state)), int(value.get("v", 0))


# --- In process (embedded mode: one process, no Redis) ---------------------------------------------


class MemoryPresenceStore:
    """The same store in this process's memory, for ``make run`` without Redis. Single process only:
    a second process (the Celery worker) sees none of it, so the node sweeps its own devices."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[tuple[int, int], Devices] = {}
        self._told: dict[tuple[int, int], tuple[MemberPresence | None, int]] = {}
        self._alive: dict[str, float] = {}

    def members_update(self, *, updates: list[MemberUpdate], now: float) -> list[MemberChange]:
        return [self._member_update(update.wedding_id, update.member_id, update.mutate, now) for update in updates]

    def _member_update(self, wedding_id: int, member_id: int, mutate: Mutation, now: float) -> MemberChange:
        key = (wedding_id, member_id)
        with self._lock:
            live = {name: d for name, d in self._devices.get(key, {}).items() if d.deadline >= now}
            after = mutate(dict(live))
            for device in after.values():  # as in Redis: a node's own device proves it alive
                self._alive.setdefault(device.node, now + settings.REALTIME_PRESENCE_NODE_TTL)
            change = _change(
                wedding_id=wedding_id,
                member_id=member_id,
                devices=after,
                published=self._told.get(key, (None, 0)),
                now=now,
            )
            if after:
                self._devices[key] = after
            else:
                self._devices.pop(key, None)
            if change.kind is not None:
                told = change.after if change.after is not None and change.after.is_online else None
                self._told[key] = (told, change.version)
            return change

    def devices(self, *, wedding_id: int, now: float) -> list[DevicePresence]:
        with self._lock:
            return [
                device
                for (wedding, _member), devices in self._devices.items()
                if wedding == wedding_id
                for device in devices.values()
                if device.deadline >= now
            ]

    def told(self, *, wedding_id: int, now: float) -> dict[int, tuple[MemberPresence, int]]:
        with self._lock:
            return {
                member: (state, version)
                for (wedding, member), (state, version) in self._told.items()
                if wedding == wedding_id
                and state is not None
                and any(d.deadline >= now for d in self._devices.get((wedding, member), {}).values())
            }

    def told_wire(self, *, wedding_ids: list[int], now: float) -> dict[int, list[ToldWire]]:
        return {
            wedding_id: [
                ToldWire(member, state.role, state.wire(), version)
                for member, (state, version) in self.told(wedding_id=wedding_id, now=now).items()
            ]
            for wedding_id in wedding_ids
        }

    def heartbeat(self, *, node: str, seen: list[DevicePresence], node_ttl: int, now: float) -> list[DevicePresence]:
        missing = []
        with self._lock:
            self._alive[node] = time.time() + node_ttl
            for device in seen:
                devices = self._devices.get((device.wedding_id, device.member_id), {})
                stored = devices.get(device.device)
                if stored is None or stored.deadline < now:
                    missing.append(device)
                elif device.deadline > stored.deadline:
                    devices[device.device] = _with_deadline(stored, device.deadline)
        return missing

    def entry_forget(self, *, wedding_id: int, member_id: int, device: str) -> None:
        return None  # one dict holds a device and its deadline: nothing is left behind

    def due(self, *, now: float, limit: int) -> list[tuple[int, int, str]]:
        with self._lock:
            return [
                (wedding, member, name)
                for (wedding, member), devices in self._devices.items()
                for name, device in devices.items()
                if device.deadline < now
            ][:limit]

    def dead_nodes(self) -> dict[str, list[tuple[int, int, str]]]:
        now = time.time()
        with self._lock:
            dead = {node for node, until in self._alive.items() if until < now}
            result: dict[str, list[tuple[int, int, str]]] = {node: [] for node in dead}
            for (wedding, member), devices in self._devices.items():
                for name, device in devices.items():
                    if device.node in dead:
                        result[device.node].append((wedding, member, name))
            return result

    def node_forget(self, *, node: str) -> None:
        with self._lock:
            if self._alive.get(node, 0) < time.time():
                self._alive.pop(node, None)


@functools.cache
def _store_for(redis_url: str | None) -> PresenceStore:
    if redis_url is None:
        return MemoryPresenceStore()
    # Short timeouts: presence calls run on the node's thread pool, which a hung Redis must not hold.
    client = redis_client(socket_timeout=2, health_check_interval=15)
    return RedisPresenceStore(client)


def presence_store() -> PresenceStore:
    """The process's store: Redis when ``REDIS_URL`` is set (one connection pool per process)."""
    return _store_for(settings.REDIS_URL)
