"""Keep Python's full garbage collections from freezing a busy node (decision 0007).

A node holding 10,000 sockets tracks millions of objects that live as long as their sockets. With
CPython's default thresholds a full collection walked all of them every ~13 s while events were
flowing, stopping the event loop for 0.7-1 s each time (measured with gc.callbacks in the Saturday
peak benchmark): every delivery in flight waited. ``gc.freeze()`` moves what exists to a
generation the collector never walks, so after the sockets settle, collections only see young
objects. Cyclic garbage among frozen objects (a closed socket's reference cycles) is reclaimed by
an occasional unfreeze-and-collect: one long pause every ``full_every`` seconds instead of one
every few seconds.
"""

from __future__ import annotations

import asyncio
import gc
import time

import structlog

logger = structlog.get_logger(__name__)


# CPython's third threshold: how many middle-generation collections pass before it considers a
# full one by itself (10 by default). The freeze loop's own collection makes those redundant.
AUTOMATIC_FULL_AFTER = 1000


def gc_freeze_survivors() -> None:
    """Collect what is not frozen yet (a short walk: only what came since the last freeze), then
    freeze the survivors, so no garbage that already exists ends up frozen."""
    gc.collect()
    gc.freeze()


def gc_full_collect() -> int:
    """Unfreeze and collect everything (the long pause); returns how many objects were freed."""
    gc.unfreeze()
    return gc.collect()


async def gc_freeze_loop(*, freeze_every: float, full_every: float) -> None:
    """Freeze the survivors every ``freeze_every`` seconds, unfreeze and collect everything every
    ``full_every``; while it runs, CPython's own full collections are held back (decision 0047):
    each walked every object made since the last freeze, which in a reconnect storm is thousands
    of new sockets' worth every second or two, and this loop already collects them at its freeze."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, max(old, AUTOMATIC_FULL_AFTER))
    last_full = time.monotonic()
    try:
        while True:
            await asyncio.sleep(freeze_every)
            if time.monotonic() - last_full >= full_every:
                started = time.perf_counter()
                freed = gc_full_collect()
                last_full = time.monotonic()
                logger.info("gc.full_collect", freed=freed, ms=round((time.perf_counter() - started) * 1000))
            gc_freeze_survivors()
    finally:
        gc.set_threshold(young, middle, old)
