"""The node's garbage-collection policy: long-lived objects are frozen, garbage is not."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest

from realtime.gc_policy import AUTOMATIC_FULL_AFTER, gc_freeze_loop, gc_freeze_survivors, gc_full_collect


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    """Stands for a socket's objects: a reference cycle, as daphne's protocol objects have."""

    def __init__(self) -> None:
        self.me = self


def test_survivors_are_frozen_and_existing_garbage_is_collected_first() -> None:
    gc.unfreeze()
    kept = Node()
    garbage = Node()
    garbage_ref = weakref.ref(garbage)
    del garbage  # a cycle: only the collector frees it

    gc_freeze_survivors()

    assert gc.get_freeze_count() > 0
    assert garbage_ref() is None  # collected, not frozen along with the survivors
    assert kept.me is kept


def test_a_full_collect_reclaims_cycles_that_died_while_frozen() -> None:
    gc.unfreeze()
    node = Node()
    node_ref = weakref.ref(node)
    gc_freeze_survivors()
    del node  # its cycle is now garbage inside the frozen generation
    gc.collect()
    assert node_ref() is not None  # frozen: ordinary collections do not see it

    gc_full_collect()

    assert node_ref() is None
    assert gc.get_freeze_count() == 0


async def test_the_loop_freezes_on_its_interval() -> None:
    gc.unfreeze()
    loop = asyncio.create_task(gc_freeze_loop(freeze_every=0.05, full_every=3600))
    try:
        async with asyncio.timeout(2):
            while gc.get_freeze_count() == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        loop.cancel()
    assert gc.get_freeze_count() > 0


async def test_the_loop_holds_back_automatic_full_collections_while_it_runs() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    loop = asyncio.create_task(gc_freeze_loop(freeze_every=3600, full_every=3600))
    await asyncio.sleep(0)
    try:
        assert gc.get_threshold() == (700, 10, AUTOMATIC_FULL_AFTER)
        assert AUTOMATIC_FULL_AFTER > 10
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert gc.get_threshold() == (700, 10, 10)  # a stopped node's process collects as CPython would
