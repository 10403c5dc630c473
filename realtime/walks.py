"""Walking every socket of a node without stopping its event loop (decision 0013).

A node's housekeeping visits each of its sockets: daphne's timeout and application checks (every
2 s and 1 s), the hub's heard-from round (2 s), its access reconciliation (5 s) and its device
refresh (20 s). At a busy node each walk held the loop in one callback, and every delivery due
meanwhile waited behind it (the figures are in decision 0013). These helpers do the same
walks a slice at a time, letting the loop run between slices, so a delivery waits for one slice
at most (a few ms). The work is the same; only its stalls are gone.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

logger = structlog.get_logger(__name__)

T = TypeVar("T")

# A slice's stall is short next to a delivery's p50, and long enough that the hops between slices
# cost nothing measurable (decision 0013).
WALK_SLICE = 500


async def in_slices(items: Sequence[T], *, size: int = WALK_SLICE) -> AsyncIterator[Sequence[T]]:
    """``items`` a slice at a time, with a turn of the event loop between slices. Walk a copy:
    whatever the caller walks may change while the loop runs."""
    if size < 1:
        raise ValueError("size must be at least 1")
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + size]


def slice_gap(count: int, *, spread: float, size: int = WALK_SLICE) -> float:
    """Seconds between the slices of a walk over ``count`` items that should take ``spread``
    seconds in all: for work that comes in bursts when the walk runs flat out (daphne's pings)."""
    if size < 1:
        raise ValueError("size must be at least 1")
    slices = -(-count // size)  # ceiling
    return spread / (slices - 1) if slices > 1 else 0.0


def sweep_in_slices(
    items: Sequence[T],
    visit: Callable[[T], None],
    *,
    call_soon: Callable[[Callable[[], None]], object],
    then: Callable[[], None],
    size: int = WALK_SLICE,
    name: str = "sweep",
) -> None:
    """:func:`in_slices` for callback code (daphne's reactor): ``visit`` each item, ``size`` per
    loop turn (scheduled with ``call_soon``), then call ``then``. A visit that raises is logged
    and the sweep goes on: one bad connection must not stop the checks of all the others."""
    if size < 1:
        raise ValueError("size must be at least 1")
    _Sweep(items, visit, call_soon=call_soon, then=then, size=size, name=name).step(0)


@dataclass(frozen=True, slots=True)
class _Sweep(Generic[T]):
    """One sweep's state. Only the callback scheduled next refers to it, so once it has run its
    last slice, reference counting frees it and its copy of the items: a closure that schedules
    itself is a reference cycle, which kept a node's every walked connection (and the handshake
    requests among them, decision 0047) waiting for the cyclic collector."""

    items: Sequence[T]
    visit: Callable[[T], None]
    call_soon: Callable[[Callable[[], None]], object]
    then: Callable[[], None]
    size: int
    name: str

    def step(self, start: int) -> None:
        for item in self.items[start : start + self.size]:
            try:
                self.visit(item)
            except Exception:
                logger.exception("walk.visit_failed", sweep=self.name)
        following = start + self.size
        if following < len(self.items):
            self.call_soon(functools.partial(self.step, following))
        else:
            self.then()
