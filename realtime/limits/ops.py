"""Operation budgets: a user's socket operations per minute (REALTIME_OP_LIMITS), counted in fixed
windows shared by every node (this process's memory when embedded)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
import structlog

from realtime.limits.breaker import ScriptCall
from realtime.limits.counting import WINDOW_COUNT_LUA, RateDecision
from wedsync.redis_keys import op_budget_key

logger = structlog.get_logger(__name__)

OP_WINDOW_SECONDS = 60


class OpBudgets:
    """The op budgets part of a node's :class:`~realtime.limits.node.Limits`."""

    def __init__(self, *, redis: aioredis.Redis | None, call: ScriptCall) -> None:
        self._call = call
        self._spend_script = None if redis is None else redis.register_script(WINDOW_COUNT_LUA)
        self._local_ops: dict[tuple[str, int, int], int] = {}  # embedded mode only

    async def spend(self, *, user_id: int, op: str, per_minute: int) -> RateDecision:
        """Spend one ``op`` from the user's budget for this minute, shared by every node; batched
        with the turn's other Redis calls. Fails open while Redis is away."""
        now = time.time()
        window = int(now // OP_WINDOW_SECONDS)
        retry_after = round(max((window + 1) * OP_WINDOW_SECONDS - now, 0.1), 1)
        if self._spend_script is None:
            self._local_ops = {key: n for key, n in self._local_ops.items() if key[2] >= window}
            count = self._local_ops[(op, user_id, window)] = self._local_ops.get((op, user_id, window), 0) + 1
        else:
            try:
                count = int(
                    await self._call(
                        self._spend_script,
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
