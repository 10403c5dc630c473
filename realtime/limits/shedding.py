"""Role-based load shedding (decision 0041): a node past its socket budget, or whose event loop runs
late, refuses new sockets guests first, then vendors, with close 1013 and a ``retry_after``. Planners,
couples, key people and staff observers are always let in, and so is a socket that says it comes to
raise an emergency (``?urgent=1``: it must publish one soon, or it is closed like the others).
Sockets already open are never shed: moving them would cost more than it saves."""

from __future__ import annotations

import asyncio
import collections
import enum
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from django.conf import settings

from realtime.selectors import MembershipView
from wedsync.permissions import VENDOR_ROLES, Permission, Role, role_has_permission

if TYPE_CHECKING:
    from wedsync.models import AuditLog

# Guests are refused from this share of the budget on, so that the rest is kept for the people
# who run the day; vendors from the budget itself.
GUEST_SHARE_OF_BUDGET = 0.9
# Vendors are refused when the loop runs this many times later than the bound that refuses guests.
VENDOR_LAG_FACTOR = 2.0
# A shed guest comes back later than a shed vendor (clients add their own jitter).
RETRY_AFTER_SECONDS = {"guest": 10.0, "vendor": 5.0}
# How long a socket let in past the shedding to raise an emergency has to publish it.
URGENT_GRACE_SECONDS = 30.0
LAG_TICK_SECONDS = 0.1
# The loop's lateness counts when it lasts: the median of the last wake-ups, so that one pause (a
# collection, a burst of connects) sheds nobody while a loop late time after time does.
LAG_WINDOW_TICKS = 10


class ShedTier(enum.StrEnum):
    """Who a new socket is, as shedding sees it: the first tier it may refuse, the second, or never."""

    GUEST = "guest"
    VENDOR = "vendor"
    KEPT = "kept"


class ShedCause(enum.StrEnum):
    BUDGET = "budget"
    LOOP_LAG = "loop_lag"


def shed_tier(*, memberships: Sequence[MembershipView], observer: bool) -> ShedTier:
    """The most needed of a user's memberships decides: one planner's role among guest invitations keeps them."""
    if observer:
        return ShedTier.KEPT
    tier = ShedTier.GUEST
    for membership in memberships:
        if membership.key_person or membership.role in (Role.PLANNER, Role.COUPLE):
            return ShedTier.KEPT
        if membership.role in VENDOR_ROLES:
            tier = ShedTier.VENDOR
    return tier


def urgent_of(*, query_string: str, memberships: Sequence[MembershipView]) -> bool:
    """``?urgent=1``: the client holds an emergency it has not managed to send; heard only from
    someone whose role may raise one (not a guest)."""
    return parse_qs(query_string).get("urgent") == ["1"] and any(
        role_has_permission(role=membership.role, permission=Permission.SEND_EMERGENCY) for membership in memberships
    )


@dataclass(frozen=True, slots=True)
class ShedVerdict:
    tier: ShedTier
    cause: ShedCause
    retry_after: float
    sockets: int  # the node's open sockets, and those being let in, when it refused
    loop_lag: float  # seconds


def shed_verdict(*, tier: ShedTier, sockets: int, loop_lag: float) -> ShedVerdict | None:
    """Whether a new socket of ``tier`` is refused, with the node holding ``sockets`` and its loop
    ``loop_lag`` seconds late (settings ``REALTIME_SOCKET_BUDGET``, ``REALTIME_SHED_LOOP_LAG_SECONDS``;
    0 turns either off)."""
    if tier is ShedTier.KEPT:
        return None
    budget: int = settings.REALTIME_SOCKET_BUDGET
    lag_bound: float = settings.REALTIME_SHED_LOOP_LAG_SECONDS
    socket_bound = budget * GUEST_SHARE_OF_BUDGET if tier is ShedTier.GUEST else budget
    if tier is ShedTier.VENDOR:
        lag_bound *= VENDOR_LAG_FACTOR
    cause = None
    if budget and sockets >= socket_bound:
        cause = ShedCause.BUDGET
    elif lag_bound and loop_lag >= lag_bound:
        cause = ShedCause.LOOP_LAG
    if cause is None:
        return None
    return ShedVerdict(
        tier=tier, cause=cause, retry_after=RETRY_AFTER_SECONDS[tier], sockets=sockets, loop_lag=round(loop_lag, 3)
    )


@dataclass(slots=True)
class UrgentGrace:
    """A socket let in past the shedding to raise an emergency: closed when ``timer`` fires first."""

    verdict: ShedVerdict
    timer: asyncio.TimerHandle
    refusal_entry: AuditLog  # the audit of its shed, written only if it raises nothing


class LoopLagWatch:
    """How late this event loop has been running: a task wakes every LAG_TICK_SECONDS, and
    :attr:`sustained` is the median lateness of the last LAG_WINDOW_TICKS wake-ups."""

    def __init__(self) -> None:
        self._late: collections.deque[float] = collections.deque([0.0], maxlen=LAG_WINDOW_TICKS)

    @property
    def sustained(self) -> float:
        return statistics.median(self._late)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_TICK_SECONDS)
            self._late.append(max(0.0, loop.time() - asked - LAG_TICK_SECONDS))
