"""Per-user device limits and each device's reconnects, shared by every node through Redis.

Devices are a Redis sorted set per user, scored by connect time, each entry kept alive by a key
with a short TTL that its node refreshes: a node that dies without saying goodbye (SIGKILL) stops
refreshing, and its sockets stop counting within a minute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from django.conf import settings

from realtime.limits.breaker import ScriptCall
from realtime.walks import in_slices
from wedsync.redis_keys import DEVICE_ALIVE_PREFIX, device_alive_key, device_connects_key, devices_key

logger = structlog.get_logger(__name__)

DEVICE_TTL_SECONDS = 60  # a device entry lives this long unless its node refreshes it
DEVICE_REFRESH_SECONDS = 20
# A device's reconnects (its presence's connection quality) are counted over the last hour.
CONNECTS_WINDOW_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class DevicesCounted:
    over: list[str]  # the user's devices over the limit, oldest first (this one included if among them)
    connects: int  # this device's connects in the last hour, this one included


@dataclass(frozen=True, slots=True)
class DeviceAdmission:
    close: list[str]  # the connections to close with 4029 (only this one under refuse_newest)
    reconnects: int  # this device's connects in the last hour, minus this one


# A device's connect in one round trip (it was four: a MULTI/EXEC, an MGET, a ZREM and presence's
# count of reconnects, a share of a reconnect storm's CPU): mark the connection alive, add it to
# the user's set, forget the entries whose alive key has expired, count the device's connects in
# the last hour; return the live connections oldest first and that count. The alive keys are derived
# from the set's members, so this needs the single (not clustered) Redis the node uses anyway.
_DEVICE_CONNECT_LUA = """
local devices, connects, connection, now = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local alive_ttl, devices_ttl, alive_prefix, window = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
redis.call('SET', alive_prefix .. connection, '1', 'EX', alive_ttl)
redis.call('ZADD', devices, now, connection)
redis.call('EXPIRE', devices, devices_ttl)
local live = {}
for _, member in ipairs(redis.call('ZRANGE', devices, 0, -1)) do
    if redis.call('EXISTS', alive_prefix .. member) == 1 then
        live[#live + 1] = member
    else
        redis.call('ZREM', devices, member)
    end
end
redis.call('ZREMRANGEBYSCORE', connects, '-inf', tonumber(now) - window)
redis.call('ZADD', connects, now, connection)
redis.call('EXPIRE', connects, window)
return {live, redis.call('ZCARD', connects)}
"""
# Its goodbye, atomic like the MULTI/EXEC it replaces at half the client's CPU (a storm's drop is
# thousands of these at once).
_DEVICE_DISCONNECT_LUA = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
"""


def device_limit_for(roles: list[str]) -> int:
    """A socket carries every wedding of its user: the most generous of the user's roles applies."""
    limits = settings.REALTIME_DEVICE_LIMITS
    return max((limits.get(role, 1) for role in roles), default=1)


class DeviceLimits:
    """The devices part of a node's :class:`~realtime.limits.node.Limits`."""

    def __init__(self, *, redis: aioredis.Redis | None, call: ScriptCall) -> None:
        self._redis = redis
        self._call = call
        if redis is not None:
            self._connect_script = redis.register_script(_DEVICE_CONNECT_LUA)
            self._disconnect_script = redis.register_script(_DEVICE_DISCONNECT_LUA)
        self._local_devices: dict[int, dict[str, float]] = {}  # embedded mode only
        self._local_connects: dict[tuple[int, str], list[float]] = {}

    async def connect(self, *, user_id: int, connection_id: str, limit: int, device_key: str = "") -> DevicesCounted:
        """Register a device (``device_key``: what names it across reconnects); returns the devices
        over ``limit``, oldest first (this one included if it is among them, which the
        refuse-newest policy uses), and how often this device connected in the last hour."""
        now = time.time()
        if self._redis is None:
            devices = self._local_devices.setdefault(user_id, {})
            devices[connection_id] = now
            ordered = sorted(devices, key=devices.__getitem__)
            recent = [
                t for t in self._local_connects.get((user_id, device_key), []) if t > now - CONNECTS_WINDOW_SECONDS
            ]
            self._local_connects[(user_id, device_key)] = [*recent, now]
            return DevicesCounted(over=ordered[: max(len(ordered) - limit, 0)], connects=len(recent) + 1)
        try:
            live, connects = await self._call(
                self._connect_script,
                keys=[devices_key(user_id=user_id), device_connects_key(user_id=user_id, device_key=device_key)],
                args=[
                    connection_id,
                    now,
                    DEVICE_TTL_SECONDS,
                    24 * 3600,
                    DEVICE_ALIVE_PREFIX,
                    CONNECTS_WINDOW_SECONDS,
                ],
            )
        except Exception as error:  # Redis away: let the device in rather than lock a planner out
            logger.warning("device_limit.unavailable", user=user_id, error=repr(error))
            return DevicesCounted(over=[], connects=1)
        connections = [member.decode() if isinstance(member, bytes) else member for member in live]
        return DevicesCounted(over=connections[: max(len(connections) - limit, 0)], connects=int(connects))

    async def admit(
        self, *, user_id: int, connection_id: str, roles: list[str], device_key: str = ""
    ) -> DeviceAdmission:
        """Count a new device and apply REALTIME_DEVICE_LIMIT_POLICY: the connections to close with
        4029, either the oldest ones past the limit or, under ``refuse_newest``, only this one."""
        counted = await self.connect(
            user_id=user_id, connection_id=connection_id, limit=device_limit_for(roles), device_key=device_key
        )
        reconnects = max(counted.connects - 1, 0)
        if not counted.over:
            return DeviceAdmission(close=[], reconnects=reconnects)
        if settings.REALTIME_DEVICE_LIMIT_POLICY == "refuse_newest":
            return DeviceAdmission(close=[connection_id], reconnects=reconnects)
        return DeviceAdmission(close=[other for other in counted.over if other != connection_id], reconnects=reconnects)

    async def refresh(self, *, connection_ids: list[str]) -> None:
        if self._redis is None or not connection_ids:
            return
        async for part in in_slices(
            connection_ids
        ):  # sliced: one pipeline of every device held the loop (decision 0013)
            async with self._redis.pipeline(transaction=False) as pipe:
                for connection_id in part:
                    pipe.set(device_alive_key(connection_id=connection_id), "1", ex=DEVICE_TTL_SECONDS)
                await pipe.execute()

    async def disconnect(self, *, user_id: int, connection_id: str) -> None:
        if self._redis is None:
            self._local_devices.get(user_id, {}).pop(connection_id, None)
            return
        await self._call(
            self._disconnect_script,
            keys=[devices_key(user_id=user_id), device_alive_key(connection_id=connection_id)],
            args=[connection_id],
        )
