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
from wedsync.permissions import Permission, role_has_permission

logger = structlog.get_logger(__name__)

DEVICE_TTL_SECONDS = 60  # a device entry lives this long unless its node refreshes it
DEVICE_REFRESH_SECONDS = 20


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0


@functools.cache
def _rate_limiter(redis_url: str | None) -> SlidingWindowCounterRateLimiter:
    """The limiter for a Redis (or, embedded, this process's memory); built once per process."""
    # Short timeouts: this runs on the node's one database thread, which a hung Redis must not hold.
    storage = (
        RedisStorage(redis_url, key_prefix="wedsync-rate", socket_timeout=0.5, socket_connect_timeout=0.5)
        if redis_url
        else MemoryStorage()
    )
    return SlidingWindowCounterRateLimiter(storage)


def publish_rate_check(*, member_id: int, role: str, event_type: str) -> RateDecision:
    """Count one publish against the member's per-minute budget (REALTIME_RATE_LIMITS, shared by
    every node). Emergencies from roles that may send them are never limited. Fails open while
    Redis is away: on a wedding day a message that flows beats a perfect count."""
    if event_type == EventType.EMERGENCY_ALERT and role_has_permission(role=role, permission=Permission.SEND_EMERGENCY):
        return RateDecision(allowed=True)
    per_minute = settings.REALTIME_RATE_LIMITS.get(role, 0)
    item = RateLimitItemPerMinute(max(per_minute, 1))
    limiter = _rate_limiter(settings.REDIS_URL)
    try:
        if per_minute > 0 and limiter.hit(item, "member", str(member_id)):
            return RateDecision(allowed=True)
        stats = limiter.get_window_stats(item, "member", str(member_id))
    except Exception:
        logger.warning("rate_limit.unavailable", member=member_id)
        return RateDecision(allowed=True)
    return RateDecision(allowed=False, retry_after=round(max(stats.reset_time - time.time(), 0.1), 1))


class Limits:
    """Device limits. One per event loop: Redis connections belong to the loop that opened them."""

    def __init__(self) -> None:
        redis_url = settings.REDIS_URL
        self._redis: aioredis.Redis | None = aioredis.Redis.from_url(redis_url, socket_timeout=5) if redis_url else None
        self._local_devices: dict[int, dict[str, float]] = {}  # embedded mode only

    # --- devices ------------------------------------------------------------------------------------

    @staticmethod
    def _devices_key(user_id: int) -> str:
        return f"wedsync:devices:{user_id}"

    @staticmethod
    def _alive_key(connection_id: str) -> str:
        return f"wedsync:device-alive:{connection_id}"

    async def device_connect(self, *, user_id: int, connection_id: str, limit: int) -> list[str]:
        """Register a device; returns the devices over ``limit``, oldest first (this one included
        if it is among them, which the refuse-newest policy uses)."""
        now = time.time()
        if self._redis is None:
            devices = self._local_devices.setdefault(user_id, {})
            devices[connection_id] = now
            ordered = sorted(devices, key=devices.__getitem__)
            return ordered[: max(len(ordered) - limit, 0)]
        try:
            return await self._device_connect_redis(
                self._redis, user_id=user_id, connection_id=connection_id, limit=limit
            )
        except Exception:  # Redis away: let the device in rather than lock a planner out
            logger.warning("device_limit.unavailable", user=user_id)
            return []

    async def _device_connect_redis(
        self, redis: aioredis.Redis, *, user_id: int, connection_id: str, limit: int
    ) -> list[str]:
        now = time.time()
        key = self._devices_key(user_id)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(self._alive_key(connection_id), "1", ex=DEVICE_TTL_SECONDS)
            pipe.zadd(key, {connection_id: now})
            pipe.expire(key, 24 * 3600)
            pipe.zrange(key, 0, -1)
            *_, members = await pipe.execute()
        connections = [member.decode() if isinstance(member, bytes) else member for member in members]
        alive = await redis.mget([self._alive_key(c) for c in connections])
        dead = [c for c, flag in zip(connections, alive, strict=True) if flag is None]
        if dead:
            await redis.zrem(key, *dead)
        live = [c for c in connections if c not in dead]
        return live[: max(len(live) - limit, 0)]

    async def device_admit(self, *, user_id: int, connection_id: str, roles: list[str]) -> list[str]:
        """Count a new device and apply REALTIME_DEVICE_LIMIT_POLICY: the connections to close with
        4029, either the oldest ones past the limit or, under ``refuse_newest``, only this one."""
        over = await self.device_connect(user_id=user_id, connection_id=connection_id, limit=device_limit_for(roles))
        if not over:
            return []
        if settings.REALTIME_DEVICE_LIMIT_POLICY == "refuse_newest":
            return [connection_id]
        return [other for other in over if other != connection_id]

    async def device_refresh(self, *, connection_ids: list[str]) -> None:
        if self._redis is None or not connection_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for connection_id in connection_ids:
                pipe.set(self._alive_key(connection_id), "1", ex=DEVICE_TTL_SECONDS)
            await pipe.execute()

    async def device_disconnect(self, *, user_id: int, connection_id: str) -> None:
        if self._redis is None:
            self._local_devices.get(user_id, {}).pop(connection_id, None)
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._devices_key(user_id), connection_id)
            pipe.delete(self._alive_key(connection_id))
            await pipe.execute()


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
