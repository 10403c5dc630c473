"""A socket's op budgets (REALTIME_OP_LIMITS, decision 0018) and its count of refusals.

Budgets are per user across nodes, kept in Redis, except two kept here per socket: heartbeats (a
Redis call per heartbeat of every socket would cost a busy node more than the heartbeats) and acks
(each socket may ack the emergency and critical events it was sent, and a little more: a per-user
budget would refuse the very acks an emergency flood asks for).
"""

from __future__ import annotations

import time

from django.conf import settings

from monitoring.metrics import RATE_LIMIT_REFUSALS
from realtime import protocol
from realtime.limits.counting import RateDecision
from realtime.limits.node import node_limits
from realtime.limits.ops import OP_WINDOW_SECONDS

VIOLATION_LIMIT = 10  # protocol violations per minute before 4400
ACK_SLACK = 50  # acks a socket may send beyond the events it was asked to ack
REFUSAL_GRACE_SECONDS = 2.0  # frames already on their way when the first refusal went out
# The ops with a budget of their own; publish has its per-role rate limit.
_BUDGETED_OPS: dict[type, str] = {
    protocol.Subscribe: "subscribe",
    protocol.Unsubscribe: "unsubscribe",
    protocol.Presence: "presence",
    protocol.Auth: "auth",
    protocol.Heartbeat: "heartbeat",
}


class SocketBudget:
    """One socket's spending of its user's op budgets."""

    # One per socket: slots and a refusal map made at the first refusal keep it small (decision 0026).
    __slots__ = (
        "_acks",
        "_acks_owed",
        "_heartbeat_window",
        "_heartbeats",
        "_refusals",
        "_refused_since",
        "_violations",
        "subscribe_floor",
        "user_id",
    )

    def __init__(self, *, user_id: int, subscribe_floor: int = 0) -> None:
        self.user_id = user_id
        # The subscribe budget a resume needs: it resubscribes every wedding of every device, twice.
        self.subscribe_floor = subscribe_floor
        self._acks = 0  # acks received, and acks asked for (emergency and critical events sent)
        self._acks_owed = 0
        self._heartbeat_window = -1  # the minute (monotonic) heartbeats are counted in, and how many
        self._heartbeats = 0
        self._refusals: tuple[float, ...] = ()  # when ops were answered rate_limited, this last minute
        self._refused_since: dict[str, float] | None = None  # op -> when its run of refusals began
        self._violations: tuple[float, ...] = ()  # when invalid frames came, this last minute

    def violated(self) -> bool:
        """Count an invalid frame; True once there were more than VIOLATION_LIMIT this minute."""
        now = time.monotonic()
        self._violations = (*(moment for moment in self._violations if now - moment < 60), now)
        return len(self._violations) > VIOLATION_LIMIT

    def ack_owed(self) -> None:
        """An emergency or critical event was sent: the client is asked for one more ack."""
        self._acks_owed += 1

    async def spend(self, frame: protocol.ClientFrame) -> tuple[str, float] | None:
        """(op, retry_after) when the frame's op is over its budget, else None (spent)."""
        if isinstance(frame, protocol.Ack):
            self._acks += 1
            if self._acks <= self._acks_owed + ACK_SLACK:
                self._run_of_refusals_ended("ack")
                return None
            return "ack", float(OP_WINDOW_SECONDS)
        op = _BUDGETED_OPS.get(type(frame))
        per_minute = settings.REALTIME_OP_LIMITS.get(op, 0) if op is not None else 0
        if op is None or not per_minute:
            return None
        if op == "heartbeat":
            decision = self._heartbeat(per_minute)
        else:
            if op == "subscribe":
                per_minute = max(per_minute, self.subscribe_floor)
            decision = await node_limits().op_spend(user_id=self.user_id, op=op, per_minute=per_minute)
        if decision.allowed:
            self._run_of_refusals_ended(op)
            return None
        return op, decision.retry_after

    def _run_of_refusals_ended(self, op: str) -> None:
        if self._refused_since is not None:
            self._refused_since.pop(op, None)

    def _heartbeat(self, per_minute: int) -> RateDecision:
        window = int(time.monotonic() // OP_WINDOW_SECONDS)
        if window != self._heartbeat_window:
            self._heartbeat_window, self._heartbeats = window, 0
        self._heartbeats += 1
        return RateDecision(
            allowed=self._heartbeats <= per_minute,
            retry_after=round(max((window + 1) * OP_WINDOW_SECONDS - time.monotonic(), 0.1), 1),
        )

    def refused(self, op: str) -> int | None:
        """Count a rate_limited answer; returns the refusals of the last minute once they reach
        REALTIME_ABUSE_REFUSALS (the socket is to be closed), else None. Refusals count from
        REFUSAL_GRACE_SECONDS after the first of a run, so frames in flight are not held against it."""
        RATE_LIMIT_REFUSALS.labels(op).inc()
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = {}
        if now - self._refused_since.setdefault(op, now) < REFUSAL_GRACE_SECONDS:
            return None
        self._refusals = (*(moment for moment in self._refusals if now - moment < 60), now)
        if len(self._refusals) < settings.REALTIME_ABUSE_REFUSALS:
            return None
        return len(self._refusals)
