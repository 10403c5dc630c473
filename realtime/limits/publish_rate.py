"""Per-member publish rate limits: the ``limits`` library's sliding-window counter (Redis when
``REDIS_URL`` is set, memory in embedded single-process mode), checked in the publish service
after the idempotency lookup, so a retried publish never costs budget."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import structlog
from django.conf import settings
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from realtime.limits.breaker import RATE_BREAKER_SECONDS, RedisBreaker
from realtime.limits.counting import RateDecision
from realtime.names import EventType
from wedsync.permissions import Permission, role_has_permission
from wedsync.redis_clients import limits_storage_options, limits_storage_uri
from wedsync.redis_keys import PUBLISH_RATE_PREFIX

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _RateLimiter:
    limiter: SlidingWindowCounterRateLimiter
    breaker: RedisBreaker


@functools.cache
def _rate_limiter(redis_url: str | None) -> _RateLimiter:
    """The limiter for a Redis (or, embedded, this process's memory); built once per process."""
    # Short timeouts: this runs on a thread of the node's pool, which a hung Redis must not hold.
    storage = (
        storage_from_string(
            limits_storage_uri(), key_prefix=PUBLISH_RATE_PREFIX, **limits_storage_options(socket_timeout=0.5)
        )
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
