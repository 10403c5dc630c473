"""Per-member publish rate limits and per-user device limits, shared by every node through Redis.

Rates use the ``limits`` library's sliding-window counter (Redis when ``REDIS_URL`` is set, memory
in embedded single-process mode), checked in the publish service after the idempotency lookup, so
a retried publish never costs budget. Devices are a Redis sorted set per user, scored by connect time,
each entry kept alive by a key with a short TTL that its node refreshes: a node that dies without
saying goodbye (SIGKILL) stops refreshing, and its sockets stop counting within a minute.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from django.conf import settings
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from realtime.names import EventType
from realtime.redis_batch import ScriptBatcher
from realtime.walks import in_slices
from wedsync.permissions import Permission, role_has_permission

logger = structlog.get_logger(__name__)

DEVICE_TTL_SECONDS = 60  # a device entry lives this long unless its node refreshes it
DEVICE_REFRESH_SECONDS = 20
DEVICE_REDIS_CONNECTIONS = 32  # per node (event loop); callers wait for one rather than fail
# A device's reconnects (its presence's connection quality) are counted over the last hour.
CONNECTS_WINDOW_SECONDS = 3600
RATE_BREAKER_SECONDS = 2.0  # after Redis failed a rate check, checks pass unasked this long


@dataclass(frozen=True, slots=True)
class DevicesCounted:
    over: list[str]  # the user's devices over the limit, oldest first (this one included if among them)
    connects: int  # this device's connects in the last hour, this one included


@dataclass(frozen=True, slots=True)
class DeviceAdmission:
    close: list[str]  # the connections to close with 4029 (only this one under refuse_newest)
    reconnects: int  # this device's connects in the last hour, minus this one


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0


class RedisBreaker:
    """Stops asking a Redis that just failed to answer, for a moment: under a partition every
    call would otherwise hold a pool thread for its whole timeout, and at a wedding-day publish
    rate that fills the pool. Per process, since it is about this process's view of Redis."""

    __slots__ = ("_open_until", "open_seconds")

    def __init__(self, *, open_seconds: float) -> None:
        self.open_seconds = open_seconds
        self._open_until = 0.0

    def allows_asking(self) -> bool:
        """True when Redis may be asked (no failure within the last ``open_seconds``)."""
        return time.monotonic() >= self._open_until

    def failed(self) -> None:
        self._open_until = time.monotonic() + self.open_seconds


@dataclass(frozen=True, slots=True)
class _RateLimiter:
    limiter: SlidingWindowCounterRateLimiter
    breaker: RedisBreaker


@functools.cache
def _rate_limiter(redis_url: str | None) -> _RateLimiter:
    """The limiter for a Redis (or, embedded, this process's memory); built once per process."""
    # Short timeouts: this runs on a thread of the node's pool, which a hung Redis must not hold.
    storage = (
        RedisStorage(redis_url, key_prefix="wedsync-rate", socket_timeout=0.5, socket_connect_timeout=0.5)
        if redis_url
        else MemoryStorage()
    )
    return _RateLimiter(SlidingWindowCounterRateLimiter(storage), RedisBreaker(open_seconds=RATE_BREAKER_SECONDS))


def publish_rate_check(*, member_id: int, role: str, event_type: str) -> RateDecision:
    """Count one publish against the member's per-minute budget (REALTIME_RATE_LIMITS, shared by
    every node). Emergencies from roles that may send them are never limited. Fails open while
    Redis is away: on a wedding day a message that flows beats a perfect count."""
    if event_type == EventType.EMERGENCY_ALERT and role_has_permission(role=role, permission=Permission.SEND_EMERGENCY):
        return RateDecision(allowed=True)
    per_minute = settings.REALTIME_RATE_LIMITS.get(role, 0)
    item = RateLimitItemPerMinute(max(per_minute, 1))
    rate = _rate_limiter(settings.REDIS_URL)
    if not rate.breaker.allows_asking():
        return RateDecision(allowed=True)
    try:
        if per_minute > 0 and rate.limiter.hit(item, "member", str(member_id)):
            return RateDecision(allowed=True)
        stats = rate.limiter.get_window_stats(item, "member", str(member_id))
    except Exception:
        rate.breaker.failed()
        logger.warning("rate_limit.unavailable", member=member_id, retry_in=rate.breaker.open_seconds)
        return RateDecision(allowed=True)
    return RateDecision(allowed=False, retry_after=round(max(stats.reset_time - time.time(), 0.1), 1))


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


class Limits:
    """Device limits. One per event loop: Redis connections belong to the loop that opened them."""

    def __init__(self) -> None:
        redis_url = settings.REDIS_URL
        self._redis: aioredis.Redis | None = None
        if redis_url:
            # A pool that waits for a free connection: redis-py's default one raises past 100 in
            # use, which a reconnect storm reaches, and each failure let a device in uncounted or
            # left a closed one counted. Calls go batched per loop turn (realtime/redis_batch.py).
            pool = aioredis.BlockingConnectionPool.from_url(
                redis_url, max_connections=DEVICE_REDIS_CONNECTIONS, timeout=5, socket_timeout=5
            )
            self._redis = aioredis.Redis.from_pool(pool)
            self._scripts = ScriptBatcher(self._redis)
            self._device_connect_script = self._redis.register_script(_DEVICE_CONNECT_LUA)
            self._device_disconnect_script = self._redis.register_script(_DEVICE_DISCONNECT_LUA)
        self._local_devices: dict[int, dict[str, float]] = {}  # embedded mode only
        self._local_connects: dict[tuple[int, str], list[float]] = {}

    async def close(self) -> None:
        """Let go of the Redis connections (a node's last as long as its event loop)."""
        if self._redis is not None:
            await self._scripts.close()
            await self._redis.aclose()

    # --- devices ------------------------------------------------------------------------------------

    @staticmethod
    def _devices_key(user_id: int) -> str:
        return f"wedsync:devices:{user_id}"

    @staticmethod
    def _alive_key(connection_id: str) -> str:
        return f"wedsync:device-alive:{connection_id}"

    @staticmethod
    def _connects_key(user_id: int, device_key: str) -> str:
        return f"wedsync:connects:{user_id}:{device_key}"

    async def device_connect(
        self, *, user_id: int, connection_id: str, limit: int, device_key: str = ""
    ) -> DevicesCounted:
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
            live, connects = await self._scripts.call(
                self._device_connect_script,
                keys=[self._devices_key(user_id), self._connects_key(user_id, device_key)],
                args=[
                    connection_id,
                    now,
                    DEVICE_TTL_SECONDS,
                    24 * 3600,
                    self._alive_key(""),
                    CONNECTS_WINDOW_SECONDS,
                ],
            )
        except Exception as error:  # Redis away: let the device in rather than lock a planner out
            logger.warning("device_limit.unavailable", user=user_id, error=repr(error))
            return DevicesCounted(over=[], connects=1)
        connections = [member.decode() if isinstance(member, bytes) else member for member in live]
        return DevicesCounted(over=connections[: max(len(connections) - limit, 0)], connects=int(connects))

    async def device_admit(
        self, *, user_id: int, connection_id: str, roles: list[str], device_key: str = ""
    ) -> DeviceAdmission:
        """Count a new device and apply REALTIME_DEVICE_LIMIT_POLICY: the connections to close with
        4029, either the oldest ones past the limit or, under ``refuse_newest``, only this one."""
        counted = await self.device_connect(
            user_id=user_id, connection_id=connection_id, limit=device_limit_for(roles), device_key=device_key
        )
        reconnects = max(counted.connects - 1, 0)
        if not counted.over:
            return DeviceAdmission(close=[], reconnects=reconnects)
        if settings.REALTIME_DEVICE_LIMIT_POLICY == "refuse_newest":
            return DeviceAdmission(close=[connection_id], reconnects=reconnects)
        return DeviceAdmission(close=[other for other in counted.over if other != connection_id], reconnects=reconnects)

    async def device_refresh(self, *, connection_ids: list[str]) -> None:
        if self._redis is None or not connection_ids:
            return
        async for part in in_slices(connection_ids):  # one pipeline of 10,000 held the loop ~50 ms
            async with self._redis.pipeline(transaction=False) as pipe:
                for connection_id in part:
                    pipe.set(self._alive_key(connection_id), "1", ex=DEVICE_TTL_SECONDS)
                await pipe.execute()

    async def device_disconnect(self, *, user_id: int, connection_id: str) -> None:
        if self._redis is None:
            self._local_devices.get(user_id, {}).pop(connection_id, None)
            return
        await self._scripts.call(
            self._device_disconnect_script,
            keys=[self._devices_key(user_id), self._alive_key(connection_id)],
            args=[connection_id],
        )


def device_limit_for(roles: list[str]) -> int:
    """A socket carries every wedding of its user: the most generous of the user's roles applies."""
    limits = settings.REALTIME_DEVICE_LIMITS
    return max((limits.get(role, 1) for role in roles), default=1)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Limits] = weakref.WeakKeyDictionary()


def node_limits() -> Limits:
    loop = asyncio.get_running_loop()
    limits = _per_loop.get(loop)
    if limits is None:
        limits = _per_loop[loop] = Limits()
    return limits
