"""Per source address (issue 16 item 5; decision 0025): socket handshakes per fixed window (a Redis
counter with a TTL) and open sockets (a sorted set per address whose members are scored by when
they expire; their node renews them with the device entries, so a dead node's sockets stop
counting within a minute), and API requests without valid credentials per fixed window. Past a
cap a socket is closed 1013 and the API answers 429.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from django.conf import settings

from monitoring.metrics import ADDRESS_LIMIT_REFUSALS
from realtime.limits.breaker import ScriptCall
from realtime.limits.counting import WINDOW_COUNT_LUA, RateDecision
from realtime.limits.devices import DEVICE_TTL_SECONDS
from realtime.walks import in_slices
from wedsync.redis_clients import redis_client
from wedsync.redis_keys import address_api_key, address_handshakes_key, address_sockets_key
from wedsync.services.audit import ClientInfo

logger = structlog.get_logger(__name__)

ADDRESS_SOCKET_TTL_SECONDS = DEVICE_TTL_SECONDS  # an open socket's place, unless its node renews it
# What a socket refused for too many open sockets at its address is told to wait: nobody knows
# when one of the others closes, and clients back off with jitter from there.
ADDRESS_CONNECTIONS_RETRY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class AddressAdmission:
    """Whether a socket from ``address`` may proceed; an admitted one holds ``entry`` in the
    address's open set until :func:`~realtime.limits.node.socket_address_release`."""

    allowed: bool
    address: str = ""
    entry: str = ""  # "" when nothing was counted (no address, no caps, Redis away)
    limit: str = ""  # the cap that refused it: "handshakes" or "connections"
    retry_after: float = 0.0


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


class AddressLimits:
    """The source addresses part of a node's :class:`~realtime.limits.node.Limits`."""

    def __init__(self, *, redis: aioredis.Redis | None, call: ScriptCall) -> None:
        self._redis = redis
        self._call = call
        if redis is not None:
            self._admit_script = redis.register_script(_ADDRESS_ADMIT_LUA)
            self._release_script = redis.register_script("redis.call('ZREM', KEYS[1], ARGV[1])")
        # This node's own open sockets per address (entry -> address), renewed with the devices.
        self._address_entries: dict[str, str] = {}
        self._local_handshakes: dict[tuple[str, int], int] = {}  # embedded mode only

    async def admit(self, *, address: str) -> AddressAdmission:
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
            return self._admit_local(
                address=address, entry=entry, now=now, bucket=bucket, handshakes_retry=handshakes_retry
            )
        try:
            allowed, limit = await self._call(
                self._admit_script,
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

    def _admit_local(
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

    async def release(self, admission: AddressAdmission) -> None:
        """The socket closed: give its place back."""
        if not admission.entry:
            return
        self._address_entries.pop(admission.entry, None)
        if self._redis is not None:  # batched: a storm's drop releases thousands at once
            await self._call(
                self._release_script,
                keys=[address_sockets_key(address=admission.address)],
                args=[admission.entry],
            )

    async def refresh(self) -> None:
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


_local_api_requests: dict[tuple[str, int], int] = {}  # embedded mode only (one process)


@functools.cache
def _api_address_script(redis_url: str) -> Any:
    # Short timeouts: this runs on a request thread, which a hung Redis must not hold.
    client = redis_client(socket_timeout=0.5)
    return client.register_script(WINDOW_COUNT_LUA)


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
