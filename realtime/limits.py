"""Per-member publish rate limits and per-user device limits, shared by every node through Redis.

Rates use the ``limits`` library's sliding-window counter (Redis when ``REDIS_URL`` is set, memory
in embedded single-process mode), checked in the publish service after the idempotency lookup, so
a retried publish never costs budget. Devices are a Redis sorted set per user, scored by connect time,
each entry kept alive by a key with a short TTL that its node refreshes: a node that dies without
saying goodbye (SIGKILL) stops refreshing, and its sockets stop counting within a minute.

Per source address (issue 16 item 5; decision 0025): socket handshakes per fixed window (a Redis
counter with a TTL) and open sockets (a sorted set per address whose members are scored by when
they expire; their node renews them with the device entries, so a dead node's sockets stop
counting within a minute), and API requests without valid credentials per fixed window. Past a
cap a socket is closed 1013 and the API answers 429.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from channels.db import database_sync_to_async
from django.conf import settings
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from monitoring.metrics import ADDRESS_LIMIT_REFUSALS
from realtime.names import EventType
from realtime.redis_batch import ScriptBatcher
from realtime.walks import in_slices
from wedsync.permissions import Permission, role_has_permission
from wedsync.redis_keys import (
    DEVICE_ALIVE_PREFIX,
    PUBLISH_RATE_PREFIX,
    address_api_key,
    address_handshakes_key,
    address_sockets_key,
    device_alive_key,
    device_connects_key,
    devices_key,
    op_budget_key,
)
from wedsync.services.audit import AuditAction, ClientInfo, audit_refusal_record

logger = structlog.get_logger(__name__)

DEVICE_TTL_SECONDS = 60  # a device entry lives this long unless its node refreshes it
DEVICE_REFRESH_SECONDS = 20
DEVICE_REDIS_CONNECTIONS = 32  # per node (event loop); callers wait for one rather than fail
# A device's reconnects (its presence's connection quality) are counted over the last hour.
CONNECTS_WINDOW_SECONDS = 3600
RATE_BREAKER_SECONDS = 2.0  # after Redis failed a rate or limits call, they pass unasked this long
LIMITS_CALL_SECONDS = 2.0  # a device, address or op-budget call given up after this (and failing open)
ADDRESS_SOCKET_TTL_SECONDS = DEVICE_TTL_SECONDS  # an open socket's place, unless its node renews it
# What a socket refused for too many open sockets at its address is told to wait: nobody knows
# when one of the others closes, and clients back off with jitter from there.
ADDRESS_CONNECTIONS_RETRY_SECONDS = 10.0


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


class RedisUnavailable(Exception):
    """A limits call was not made: Redis failed one a moment ago."""


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


@dataclass(frozen=True, slots=True)
class AddressAdmission:
    """Whether a socket from ``address`` may proceed; an admitted one holds ``entry`` in the
    address's open set until :func:`socket_address_release`."""

    allowed: bool
    address: str = ""
    entry: str = ""  # "" when nothing was counted (no address, no caps, Redis away)
    limit: str = ""  # the cap that refused it: "handshakes" or "connections"
    retry_after: float = 0.0


@functools.cache
def _rate_limiter(redis_url: str | None) -> _RateLimiter:
    """The limiter for a Redis (or, embedded, this process's memory); built once per process."""
    # Short timeouts: this runs on a thread of the node's pool, which a hung Redis must not hold.
    storage = (
        RedisStorage(redis_url, key_prefix=PUBLISH_RATE_PREFIX, socket_timeout=0.5, socket_connect_timeout=0.5)
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


# A handshake from an address: count it in the window, then take a place among the address's open
# sockets (forgetting the places whose node stopped renewing them). A cap of 0 is no cap.
_ADDRESS_ADMIT_LUA = """
local sockets, handshakes = KEYS[1], KEYS[2]
local entry, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_open, max_handshakes, window_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local count = redis.call('INCR', handshakes)
if count == 1 then
    redis.call('EXPIRE', handshakes, window_ttl)
end
if max_handshakes > 0 and count > max_handshakes then
    return {0, 'handshakes'}
end
redis.call('ZREMRANGEBYSCORE', sockets, '-inf', now)
if max_open > 0 and redis.call('ZCARD', sockets) >= max_open then
    return {0, 'connections'}
end
redis.call('ZADD', sockets, now + ttl, entry)
redis.call('EXPIRE', sockets, ttl)
return {1, ''}
"""


# One more in a fixed window's count (KEYS[1]), which expires ARGV[1] seconds after its first: an
# operation spent from a user's budget, an API request without credentials from an address.
_WINDOW_COUNT_LUA = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""
OP_WINDOW_SECONDS = 60


class Limits:
    """Device and address limits, and operation budgets. One per event loop: Redis connections belong to the loop that
    opened them."""

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
            self._address_admit_script = self._redis.register_script(_ADDRESS_ADMIT_LUA)
            self._address_release_script = self._redis.register_script("redis.call('ZREM', KEYS[1], ARGV[1])")
            self._op_spend_script = self._redis.register_script(_WINDOW_COUNT_LUA)
        self._local_ops: dict[tuple[str, int, int], int] = {}  # embedded mode only
        self._breaker = RedisBreaker(open_seconds=RATE_BREAKER_SECONDS)
        self._local_devices: dict[int, dict[str, float]] = {}  # embedded mode only
        self._local_connects: dict[tuple[int, str], list[float]] = {}
        # This node's own open sockets per address (entry -> address), renewed with the devices.
        self._address_entries: dict[str, str] = {}
        self._local_handshakes: dict[tuple[str, int], int] = {}  # embedded mode only

    async def _script(self, script: Any, *, keys: list[Any], args: list[Any]) -> Any:
        """One batched script call, given up after LIMITS_CALL_SECONDS; while Redis just failed one
        (the breaker), given up at once. Callers fail open: under a partition a connect or an op
        waits for Redis once, not every time."""
        if not self._breaker.allows_asking():
            raise RedisUnavailable("Redis failed a limits call a moment ago")
        try:
            return await asyncio.wait_for(self._scripts.call(script, keys=keys, args=args), LIMITS_CALL_SECONDS)
        except Exception:
            self._breaker.failed()
            raise

    async def close(self) -> None:
        """Let go of the Redis connections (a node's last as long as its event loop)."""
        if self._redis is not None:
            await self._scripts.close()
            await self._redis.aclose()

    # --- operation budgets --------------------------------------------------------------------------

    async def op_spend(self, *, user_id: int, op: str, per_minute: int) -> RateDecision:
        """Spend one ``op`` from the user's budget for this minute (REALTIME_OP_LIMITS), shared by
        every node; batched with the turn's other Redis calls. Fails open while Redis is away."""
        now = time.time()
        window = int(now // OP_WINDOW_SECONDS)
        retry_after = round(max((window + 1) * OP_WINDOW_SECONDS - now, 0.1), 1)
        if self._redis is None:
            self._local_ops = {key: n for key, n in self._local_ops.items() if key[2] >= window}
            count = self._local_ops[(op, user_id, window)] = self._local_ops.get((op, user_id, window), 0) + 1
        else:
            try:
                count = int(
                    await self._script(
                        self._op_spend_script,
                        keys=[op_budget_key(op=op, user_id=user_id, window=window)],
                        args=[OP_WINDOW_SECONDS + 5],
                    )
                )
            except Exception as error:  # Redis away: the op goes through rather than the member stalls
                logger.warning("op_budget.unavailable", op=op, error=repr(error))
                return RateDecision(allowed=True)
        if count <= per_minute:
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after=retry_after)

    # --- devices ------------------------------------------------------------------------------------

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
            live, connects = await self._script(
                self._device_connect_script,
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
        await self.address_refresh()
        if self._redis is None or not connection_ids:
            return
        async for part in in_slices(connection_ids):  # one pipeline of 10,000 held the loop ~50 ms
            async with self._redis.pipeline(transaction=False) as pipe:
                for connection_id in part:
                    pipe.set(device_alive_key(connection_id=connection_id), "1", ex=DEVICE_TTL_SECONDS)
                await pipe.execute()

    async def device_disconnect(self, *, user_id: int, connection_id: str) -> None:
        if self._redis is None:
            self._local_devices.get(user_id, {}).pop(connection_id, None)
            return
        await self._script(
            self._device_disconnect_script,
            keys=[devices_key(user_id=user_id), device_alive_key(connection_id=connection_id)],
            args=[connection_id],
        )

    # --- source addresses ----------------------------------------------------------------------

    async def address_admit(self, *, address: str) -> AddressAdmission:
        """Count a handshake from ``address`` (REALTIME_ADDRESS_HANDSHAKES per
        REALTIME_ADDRESS_HANDSHAKE_WINDOW_SECONDS) and give it a place among the address's open
        sockets (REALTIME_ADDRESS_CONNECTIONS), on every node alike. Fails open while Redis is away."""
        max_open, max_handshakes = settings.REALTIME_ADDRESS_CONNECTIONS, settings.REALTIME_ADDRESS_HANDSHAKES
        if not max_open and not max_handshakes:
            return AddressAdmission(allowed=True)
        window = settings.REALTIME_ADDRESS_HANDSHAKE_WINDOW_SECONDS
        now = time.time()
        bucket = int(now // window)
        entry = uuid.uuid4().hex
        handshakes_retry = round(max((bucket + 1) * window - now, 0.1), 1)
        if self._redis is None:
            return self._address_admit_local(
                address=address, entry=entry, now=now, bucket=bucket, handshakes_retry=handshakes_retry
            )
        try:
            allowed, limit = await self._script(
                self._address_admit_script,
                keys=[address_sockets_key(address=address), address_handshakes_key(address=address, bucket=bucket)],
                args=[entry, now, ADDRESS_SOCKET_TTL_SECONDS, max_open, max_handshakes, window + 1],
            )
        except Exception as error:  # Redis away: a venue's guests getting in beats a perfect count
            logger.warning("address_limit.unavailable", address=address, error=repr(error))
            return AddressAdmission(allowed=True)
        if not allowed:
            refused_by = limit.decode() if isinstance(limit, bytes) else str(limit)
            retry = handshakes_retry if refused_by == "handshakes" else ADDRESS_CONNECTIONS_RETRY_SECONDS
            return AddressAdmission(allowed=False, address=address, limit=refused_by, retry_after=retry)
        self._address_entries[entry] = address
        return AddressAdmission(allowed=True, address=address, entry=entry)

    def _address_admit_local(
        self, *, address: str, entry: str, now: float, bucket: int, handshakes_retry: float
    ) -> AddressAdmission:
        """Embedded (one process, no Redis): the same rules over this process's memory."""
        self._local_handshakes = {key: n for key, n in self._local_handshakes.items() if key[1] >= bucket}
        count = self._local_handshakes[(address, bucket)] = self._local_handshakes.get((address, bucket), 0) + 1
        if settings.REALTIME_ADDRESS_HANDSHAKES and count > settings.REALTIME_ADDRESS_HANDSHAKES:
            return AddressAdmission(allowed=False, address=address, limit="handshakes", retry_after=handshakes_retry)
        open_here = sum(1 for other in self._address_entries.values() if other == address)
        if settings.REALTIME_ADDRESS_CONNECTIONS and open_here >= settings.REALTIME_ADDRESS_CONNECTIONS:
            return AddressAdmission(
                allowed=False, address=address, limit="connections", retry_after=ADDRESS_CONNECTIONS_RETRY_SECONDS
            )
        self._address_entries[entry] = address
        return AddressAdmission(allowed=True, address=address, entry=entry)

    async def address_release(self, admission: AddressAdmission) -> None:
        """The socket closed: give its place back."""
        if not admission.entry:
            return
        self._address_entries.pop(admission.entry, None)
        if self._redis is not None:  # batched: a storm's drop releases thousands at once
            await self._script(
                self._address_release_script,
                keys=[address_sockets_key(address=admission.address)],
                args=[admission.entry],
            )

    async def address_refresh(self) -> None:
        """Renew the places of this node's open sockets (a node that stops renewing, because it
        died, loses them within ADDRESS_SOCKET_TTL_SECONDS)."""
        if self._redis is None or not self._address_entries:
            return
        by_address: dict[str, dict[str, float]] = {}
        expires = time.time() + ADDRESS_SOCKET_TTL_SECONDS
        for entry, address in list(self._address_entries.items()):
            by_address.setdefault(address, {})[entry] = expires
        async for part in in_slices(list(by_address.items())):
            async with self._redis.pipeline(transaction=False) as pipe:
                for address, entries in part:
                    key = address_sockets_key(address=address)
                    pipe.zadd(key, entries)
                    pipe.expire(key, ADDRESS_SOCKET_TTL_SECONDS)
                await pipe.execute()


async def socket_address_admit(*, client: ClientInfo) -> AddressAdmission:
    """The socket consumer's first step: may a socket from this address go on (caps shared by every
    node)? A refusal is counted and audited, aggregated per address (decision 0025)."""
    if client.ip is None:  # not over TCP (a test harness, a Unix socket): nothing to key on
        return AddressAdmission(allowed=True)
    admission = await node_limits().address_admit(address=client.ip)
    if not admission.allowed:
        ADDRESS_LIMIT_REFUSALS.labels(limit=admission.limit).inc()
        await database_sync_to_async(audit_refusal_record)(
            action=AuditAction.SOCKET_REFUSE,
            reason=f"address_{admission.limit}",
            client=client,
            details={"method": "handshake", "retry_after": admission.retry_after},
        )
    return admission


async def socket_address_release(admission: AddressAdmission | None) -> None:
    """The socket consumer's last step: give back the place :func:`socket_address_admit` took."""
    if admission is None:
        return
    try:
        await node_limits().address_release(admission)
    except Exception:  # Redis away: the place expires by itself within a minute
        logger.warning("socket.address_release_failed", address=admission.address)


_local_api_requests: dict[tuple[str, int], int] = {}  # embedded mode only (one process)


@functools.cache
def _api_address_script(redis_url: str) -> Any:
    # Short timeouts: this runs on a request thread, which a hung Redis must not hold.
    client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return client.register_script(_WINDOW_COUNT_LUA)


def api_address_check(*, client: ClientInfo) -> RateDecision:
    """Count one API request without valid credentials against its address's budget
    (API_UNAUTHENTICATED_RATE: N per fixed period, shared by every node). Fails open while Redis
    is away."""
    amount, _, period = settings.API_UNAUTHENTICATED_RATE.partition("/")
    window = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]
    address = client.ip or "-"
    now = time.time()
    bucket = int(now // window)
    redis_url: str | None = settings.REDIS_URL
    if redis_url is None:
        for key in [key for key in _local_api_requests if key[1] < bucket]:
            del _local_api_requests[key]
        count = _local_api_requests[(address, bucket)] = _local_api_requests.get((address, bucket), 0) + 1
    else:
        try:
            count = int(
                _api_address_script(redis_url)(
                    keys=[address_api_key(address=address, bucket=bucket)], args=[window + 1]
                )
            )
        except redis.RedisError as error:
            logger.warning("api_address_limit.unavailable", address=address, error=repr(error))
            return RateDecision(allowed=True)
    if count <= int(amount):
        return RateDecision(allowed=True)
    ADDRESS_LIMIT_REFUSALS.labels(limit="api").inc()
    return RateDecision(allowed=False, retry_after=round(max((bucket + 1) * window - now, 0.1), 1))


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
