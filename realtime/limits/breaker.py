"""The breaker that stops limits asking a Redis that just failed them."""

from __future__ import annotations

import time
from typing import Any, Protocol

RATE_BREAKER_SECONDS = 2.0  # after Redis failed a rate or limits call, they pass unasked this long


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


class ScriptCall(Protocol):
    """A batched Lua script call on the node's Redis, guarded by the breaker (``Limits._script``)."""

    async def __call__(self, script: Any, *, keys: list[Any], args: list[Any]) -> Any: ...
