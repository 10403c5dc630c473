"""Counting sign-in attempts (password logins and token refreshes) per bucket, shared by every node.

Each bucket (``login.address``, ``login.user``, ``refresh.address``, ``refresh.user``) is a moving
window in Redis (the ``limits`` library's Lua scripts, so concurrent attempts on several nodes are
counted exactly, where DRF's cache throttles read and write a list and let a burst through), or in
this process's memory when embedded.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time

import structlog
from django.conf import settings
from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from wedsync.redis_clients import limits_storage_options, limits_storage_uri
from wedsync.redis_keys import AUTH_RATE_PREFIX

logger = structlog.get_logger(__name__)

_PER: dict[str, type[RateLimitItem]] = {
    "s": RateLimitItemPerSecond,
    "m": RateLimitItemPerMinute,
    "h": RateLimitItemPerHour,
    "d": RateLimitItemPerDay,
}


@functools.cache
def _limiter(redis_url: str | None) -> MovingWindowRateLimiter:
    # Short timeouts: a login waits on this, and a hung Redis must not hold the request.
    if not redis_url:
        return MovingWindowRateLimiter(storage_from_string("memory://"))
    options = {"key_prefix": AUTH_RATE_PREFIX, **limits_storage_options(socket_timeout=0.5)}
    return MovingWindowRateLimiter(storage_from_string(limits_storage_uri(), **options))


@functools.cache
def _rate_item(rate: str) -> RateLimitItem:
    """``"30/min"`` (the format the settings check) as a ``limits`` item."""
    amount, period = rate.split("/")
    return _PER[period[0]](int(amount))


def auth_attempt_hit(*, bucket: str, identity: str, rate: str) -> int | None:
    """Count one attempt by ``identity`` in ``bucket``: None when it is within ``rate``, else the
    whole seconds until the window lets one more through.

    The identity is hashed: usernames come from clients and may be anything. Fails open while
    Redis is away (logged): on a wedding day a sign-in that works beats a perfect count.
    """
    item = _rate_item(rate)
    key = hashlib.sha256(identity.encode()).hexdigest()
    limiter = _limiter(settings.REDIS_URL)
    try:
        if limiter.hit(item, bucket, key):
            return None
        stats = limiter.get_window_stats(item, bucket, key)
    except Exception:
        logger.warning("auth_throttle.unavailable", bucket=bucket)
        return None
    return max(math.ceil(stats.reset_time - time.time()), 1)
