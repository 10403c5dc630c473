"""Walking every socket a slice at a time (realtime.walks), and daphne's checks done that way."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from realtime.daphne.patches import _application_check
from realtime.walks import in_slices, slice_gap, sweep_in_slices


async def test_in_slices_yields_everything_once_in_order_and_lets_the_loop_run_between() -> None:
    ran_between: list[int] = []
    seen: list[int] = []

    async def other_work() -> None:
        while True:
            ran_between.append(len(seen))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    ran_between.clear()
    async for part in in_slices(list(range(10)), size=4):
        seen += part
    other.cancel()
    assert seen == list(range(10))
    # The other task ran after the first slice and after the second, never inside one.
    assert 4 in ran_between and 8 in ran_between
    assert all(count % 4 == 0 for count in ran_between)


async def test_in_slices_of_nothing_and_a_bad_size() -> None:
    nothing: list[int] = []
    assert [part async for part in in_slices(nothing, size=3)] == []
    with pytest.raises(ValueError, match="at least 1"):
        [part async for part in in_slices([1], size=0)]


class ManualLoop:
    """Stands for the reactor: runs what was scheduled only when told to."""

    def __init__(self) -> None:
        self.scheduled: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.scheduled.append(callback)

    def turn(self) -> None:
        callbacks, self.scheduled = self.scheduled, []
        for callback in callbacks:
            callback()


def test_sweep_visits_one_slice_per_turn_then_calls_then() -> None:
    loop, visited, done = ManualLoop(), list[int](), list[bool]()
    sweep_in_slices(list(range(7)), visited.append, call_soon=loop.call_soon, then=lambda: done.append(True), size=3)
    assert visited == [0, 1, 2] and not done
    loop.turn()
    assert visited == [0, 1, 2, 3, 4, 5] and not done
    loop.turn()
    assert visited == list(range(7)) and done == [True]
    assert loop.scheduled == []


def test_sweep_goes_on_past_a_visit_that_raises() -> None:
    loop, visited, done = ManualLoop(), list[int](), list[bool]()

    def visit(item: int) -> None:
        if item == 1:
            raise RuntimeError("one bad connection")
        visited.append(item)

    sweep_in_slices([0, 1, 2, 3], visit, call_soon=loop.call_soon, then=lambda: done.append(True), size=2)
    loop.turn()
    assert visited == [0, 2, 3] and done == [True]


def test_sweep_of_nothing_calls_then_at_once() -> None:
    done: list[bool] = []
    sweep_in_slices([], lambda item: None, call_soon=ManualLoop().call_soon, then=lambda: done.append(True))
    assert done == [True]


class Connections(list[int]):
    """A list a weak reference can follow."""


def test_a_finished_sweep_leaves_nothing_for_the_cyclic_collector() -> None:
    loop, done = ManualLoop(), list[bool]()
    items = Connections(range(5))
    gone = weakref.ref(items)
    was_enabled = gc.isenabled()
    gc.disable()  # only reference counting may free the sweep and its items
    try:
        sweep_in_slices(items, lambda item: None, call_soon=loop.call_soon, then=lambda: done.append(True), size=2)
        del items
        loop.turn()
        loop.turn()
        assert done == [True]
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()


class FakeServer:
    application_close_timeout = 10

    def __init__(self) -> None:
        self.connections: dict[Any, dict[str, Any]] = {}
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class FakeProtocol:
    def __init__(self) -> None:
        self.handled: list[BaseException] = []

    def handle_exception(self, exception: BaseException) -> None:
        self.handled.append(exception)


async def test_application_check_reaps_cancels_and_forgets_as_daphne_does(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    server = FakeServer()
    running, finished, failed, overdue, gone = (FakeProtocol() for _ in range(5))
    done: asyncio.Future[None] = loop.create_future()
    done.set_result(None)
    broken: asyncio.Future[None] = loop.create_future()
    broken.set_exception(ValueError("boom"))
    still_running: asyncio.Future[None] = loop.create_future()
    hanging: asyncio.Future[None] = loop.create_future()
    server.connections = {
        running: {"application_instance": still_running},
        finished: {"application_instance": done, "disconnected": time.time()},
        failed: {"application_instance": broken},
        overdue: {"application_instance": hanging, "disconnected": time.time() - 60},
    }
    with caplog.at_level(logging.WARNING, logger="daphne.server"):
        for protocol in (running, finished, failed, overdue, gone):  # gone: not a connection any more
            _application_check(server, protocol)

    assert server.connections[running] == {"application_instance": still_running}  # left alone
    assert finished not in server.connections  # app done and socket gone: forgotten
    assert "application_instance" not in server.connections[failed]  # reaped, its error handled
    assert [str(error) for error in failed.handled] == ["boom"]
    assert hanging.cancelled()  # outlived its disconnect: cancelled, reaped on the next check
    assert "took too long to shut down" in caplog.text and "Exception inside application" in caplog.text
    _application_check(server, overdue)
    assert overdue not in server.connections
    assert not server.stopped


def test_a_spread_walk_spaces_its_slices_to_take_the_spread_in_all() -> None:
    assert slice_gap(10_000, spread=1.5, size=500) == pytest.approx(1.5 / 19)  # 20 slices, 19 gaps
    assert slice_gap(500, spread=1.5, size=500) == 0.0  # one slice: nothing to space
    assert slice_gap(0, spread=1.5, size=500) == 0.0
    with pytest.raises(ValueError, match="size"):
        slice_gap(10, spread=1.0, size=0)
