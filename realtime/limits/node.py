"""A node's socket limits: one :class:`Limits` per event loop (Redis connections belong to the loop
that opened them), whose devices, address and op budget parts share its Redis connection and
breaker; and the consumer's address admission through it."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis.asyncio as aioredis
import structlog
from channels.db import database_sync_to_async
from django.conf import settings

from monitoring.metrics import ADDRESS_LIMIT_REFUSALS
from realtime.limits.addresses import AddressAdmission, AddressLimits
from realtime.limits.breaker import RATE_BREAKER_SECONDS, RedisBreaker, RedisUnavailable
from realtime.limits.counting import RateDecision
from realtime.limits.devices import DeviceAdmission, DeviceLimits, DevicesCounted
from realtime.limits.ops import OpBudgets
from realtime.redis_batch import ScriptBatcher
from wedsync.redis_clients import redis_async_blocking_client
from wedsync.services.audit import AuditAction, ClientInfo, audit_refusal_record

logger = structlog.get_logger(__name__)

DEVICE_REDIS_CONNECTIONS = 32  # per node (event loop); callers wait for one rather than fail
LIMITS_CALL_SECONDS = 2.0  # a device, address or op-budget call given up after this (and failing open)


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
            self._redis = redis_async_blocking_client(max_connections=DEVICE_REDIS_CONNECTIONS, socket_timeout=5)
            self._scripts = ScriptBatcher(self._redis)
        self._breaker = RedisBreaker(open_seconds=RATE_BREAKER_SECONDS)
        self._ops = OpBudgets(redis=self._redis, call=self._script)
        self._devices = DeviceLimits(redis=self._redis, call=self._script)
        self._addresses = AddressLimits(redis=self._redis, call=self._script)

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

    async def op_spend(self, *, user_id: int, op: str, per_minute: int) -> RateDecision:
        return await self._ops.spend(user_id=user_id, op=op, per_minute=per_minute)

    async def device_connect(
        self, *, user_id: int, connection_id: str, limit: int, device_key: str = ""
    ) -> DevicesCounted:
        return await self._devices.connect(
            user_id=user_id, connection_id=connection_id, limit=limit, device_key=device_key
        )

    async def device_admit(
        self, *, user_id: int, connection_id: str, roles: list[str], device_key: str = ""
    ) -> DeviceAdmission:
        return await self._devices.admit(
            user_id=user_id, connection_id=connection_id, roles=roles, device_key=device_key
        )

    async def device_refresh(self, *, connection_ids: list[str]) -> None:
        """Renew this node's devices and its sockets' places at their addresses."""
        await self._addresses.refresh()
        await self._devices.refresh(connection_ids=connection_ids)

    async def device_disconnect(self, *, user_id: int, connection_id: str) -> None:
        await self._devices.disconnect(user_id=user_id, connection_id=connection_id)

    async def address_admit(self, *, address: str) -> AddressAdmission:
        return await self._addresses.admit(address=address)

    async def address_release(self, admission: AddressAdmission) -> None:
        await self._addresses.release(admission)


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


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Limits] = weakref.WeakKeyDictionary()


def node_limits() -> Limits:
    loop = asyncio.get_running_loop()
    limits = _per_loop.get(loop)
    if limits is None:
        limits = _per_loop[loop] = Limits()
    return limits
