"""Every Redis client the service opens at run time, made here: on ``REDIS_URL``, or, with
``REDIS_SENTINELS``, on whichever server the sentinels name master of ``REDIS_SENTINEL_MASTER``
(decision 0044). A Sentinel-backed pool asks the sentinels again when its connection fails, so a
failover is followed without a restart. Callers say how long they may wait and cache the client per
process; the channel layer, the cache and Celery are configured in settings.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from django.conf import settings

from wedsync.settings import redis_url_credentials

SENTINEL_TIMEOUT = 2.0  # asking a sentinel where the master is


def _url() -> str:
    url: str | None = settings.REDIS_URL
    if not url:
        raise RuntimeError("Redis is not configured (REDIS_URL): embedded processes have no Redis clients")
    return url


def _sentinel_kwargs() -> dict[str, Any]:
    return {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}


@functools.cache
def _sentinel(sentinels: tuple[tuple[str, int], ...]) -> redis.sentinel.Sentinel:
    return redis.sentinel.Sentinel(list(sentinels), sentinel_kwargs=_sentinel_kwargs())  # type: ignore[no-untyped-call]


def redis_client(*, socket_timeout: float, health_check_interval: int = 0) -> redis.Redis:
    """A client with its own pool on the master, for one purpose of one process."""
    url = _url()
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": health_check_interval,
    }
    if settings.REDIS_SENTINELS:
        sentinel = _sentinel(tuple(settings.REDIS_SENTINELS))
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.REDIS_SENTINEL_MASTER, redis_class=redis.Redis, **redis_url_credentials(url), **options
        )
        return master
    return redis.Redis.from_url(url, **options)


class _AsyncBlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool that makes callers wait for a free connection, as the node's limits need."""


def redis_async_blocking_client(*, max_connections: int, socket_timeout: float) -> aioredis.Redis:
    """A client for one event loop: its callers wait for a free connection, not fail past ``max_connections``."""
    url = _url()
    if settings.REDIS_SENTINELS:
        sentinel = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(settings.REDIS_SENTINELS), sentinel_kwargs=_sentinel_kwargs()
        )
        pool = _AsyncBlockingSentinelPool(  # type: ignore[no-untyped-call]
            settings.REDIS_SENTINEL_MASTER,
            sentinel,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            **redis_url_credentials(url),
        )
        return aioredis.Redis.from_pool(pool)
    blocking: aioredis.BlockingConnectionPool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=socket_timeout, socket_timeout=socket_timeout
    )
    return aioredis.Redis.from_pool(blocking)


def limits_storage_uri() -> str:
    """The ``limits`` library's storage URI for REDIS_URL or its sentinels (options: :func:`limits_storage_options`)."""
    if settings.REDIS_SENTINELS:
        locations = ",".join(f"{host}:{port}" for host, port in settings.REDIS_SENTINELS)
        return f"redis+sentinel://{locations}/{settings.REDIS_SENTINEL_MASTER}"
    url = _url()
    return "redis+unix://" + url.removeprefix("unix://") if url.startswith("unix://") else url


def limits_storage_options(*, socket_timeout: float) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
    if settings.REDIS_SENTINELS:
        # Counts are read where they are written: a replica lags, and would let a burst through.
        options.update(
            redis_url_credentials(_url()),
            use_replicas=False,
            # limits would send the master's credentials to the sentinels too, which have none.
            sentinel_kwargs={**_sentinel_kwargs(), "password": None, "username": None},
        )
    return options


class SentinelCachePool:
    """Django's Redis cache builds its pool with ``pool_class.from_url(url, **options)``: with
    sentinels, a Sentinel pool on the master they name instead."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> redis.sentinel.SentinelConnectionPool:
        sentinel = _sentinel(tuple(settings.REDIS_SENTINELS))
        return redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
            settings.REDIS_SENTINEL_MASTER, sentinel, **redis_url_credentials(url), **options
        )
