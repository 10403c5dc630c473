"""The load generator counts what arrived against what was stored: losses are seen, not assumed."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.loadgen import LoadGenerator, SocketSpec
from bench.resume import RefusedForGood, RefusedForNow, Tries, node_order, resume_one
from bench.worker import Worker


@contextmanager
def one_room(url: str) -> Iterator[tuple[LoadGenerator, LoadGenerator]]:
    """A planner publishing and five receivers on two worker processes, all in wedding 1."""
    specs = [SocketSpec(member=1, token="-", topic="wedding:1", publisher=True)]
    specs += [SocketSpec(member=n, token="-", topic="wedding:1") for n in range(2, 7)]
    publisher = LoadGenerator(url, specs[:1], workers=1)
    receivers = LoadGenerator(url, specs[1:], workers=2)
    try:
        yield publisher, receivers
    finally:
        publisher.close()
        receivers.close()


def test_every_delivery_is_counted_and_a_missing_one_is_lost(ceiling_url: str) -> None:
    with one_room(ceiling_url) as (publisher, receivers):
        assert publisher.connect()["connected"] == 1
        assert receivers.connect()["connected"] == 5
        publisher.reset()
        receivers.reset()

        published = publisher.publish(burst=4)
        assert sorted(published["wedding:1"]) == [1, 2, 3, 4]
        # One seq the server never sent: every receiver must report it missing.
        published["wedding:1"].append(99)
        figures = receivers.collect(expected=published, timeout=1.0)

        assert figures["expected"] == 5 * 5
        assert figures["delivered"] == 5 * 4
        assert figures["lost"] == 5
        assert figures["duplicates"] == 0
        assert len(figures["latencies"]) == 5 * 4


def test_resume_after_a_drop_loses_and_doubles_nothing(ceiling_url: str) -> None:
    specs = [SocketSpec(member=1, token="-", topic="wedding:7", publisher=True), SocketSpec(2, "-", "wedding:7")]
    publisher = LoadGenerator(ceiling_url, specs[:1], workers=1)
    receiver = LoadGenerator(ceiling_url, specs[1:], workers=1)
    try:
        publisher.connect()
        receiver.connect()
        receiver.reset()
        first = publisher.publish(burst=3)
        receiver.collect(expected=first, timeout=2.0)

        resumed = receiver.storm(deadline=10)

        assert resumed["connected"] == 1
        more = publisher.publish(burst=2)
        figures = receiver.collect(expected={"wedding:7": first["wedding:7"] + more["wedding:7"]}, timeout=2.0)
        assert (figures["delivered"], figures["lost"], figures["duplicates"]) == (5, 0, 0)
    finally:
        publisher.close()
        receiver.close()


def test_connecting_in_two_steps_connects_each_socket_once(ceiling_url: str) -> None:
    # The bench reads the server's memory after the first tenth of the sockets (bench.scenarios).
    with one_room(ceiling_url) as (publisher, receivers):
        publisher.connect()
        assert receivers.connect(limit=2)["connected"] == 2  # one per worker
        assert receivers.connect()["connected"] == 3  # the rest
        assert receivers.connect()["connected"] == 0
        publisher.reset()
        receivers.reset()

        published = publisher.publish(burst=2)
        figures = receivers.collect(expected=published, timeout=1.0)
        assert (figures["expected"], figures["delivered"], figures["duplicates"]) == (5 * 2, 5 * 2, 0)


def test_a_member_starts_on_its_own_node_and_a_lost_node_s_members_spread_over_the_rest() -> None:
    assert node_order(7, 1) == [0]
    assert node_order(4, 3)[0] == 1
    orders = [node_order(member, 3) for member in range(300)]
    assert all(sorted(order) == [0, 1, 2] for order in orders)
    lost_to = [order[1] for order in orders if order[0] == 0]
    assert lost_to.count(1) == lost_to.count(2) == 50


def test_the_sockets_of_a_killed_node_resume_on_the_others_and_nobody_else_moves(
    three_ceilings: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    urls = [url for url, _server in three_ceilings]
    specs = [SocketSpec(member=n, token="-", topic="wedding:3") for n in range(1, 25)]
    receivers = LoadGenerator(urls, specs, workers=2)
    try:
        assert receivers.connect()["connected"] == 24
        three_ceilings[0][1].kill()
        three_ceilings[0][1].wait(timeout=10)

        moved = receivers.lose_node(node=0, deadline=20)

        on_lost_node = [spec.member for spec in specs if node_order(spec.member, 3)[0] == 0]
        assert (moved["connected"], moved["failed"]) == (len(on_lost_node), 0)
        assert moved["noticed_seconds"] is not None
        # Each stays on its own node, or on the lost node's next one in its order.
        ends_on = [order[1] if order[0] == 0 else order[0] for order in (node_order(s.member, 3) for s in specs)]
        assert moved["nodes"] == {"0": 0, "1": ends_on.count(1), "2": ends_on.count(2)}
        assert moved["nodes"]["1"] + moved["nodes"]["2"] == 24
    finally:
        receivers.close()


async def test_a_refused_resume_waits_out_retry_after_then_tries_another_node_first() -> None:
    spec = SocketSpec(member=3, token="-", topic="wedding:3")
    worker = Worker(["ws://127.0.0.1:9/a", "ws://127.0.0.1:9/b"], [spec])
    tries: list[tuple[float, int | None]] = []

    async def open_refused_once(_spec: SocketSpec, *, resume: bool, refused_by: int | None = None) -> None:
        tries.append((time.perf_counter(), refused_by))
        if len(tries) == 1:
            refused = RefusedForNow("unavailable", retry_after=1.5)
            refused.node = 1
            raise refused

    worker._open = open_refused_once  # type: ignore[assignment,method-assign]
    counted = Tries()
    assert await resume_one(worker, spec, started=time.perf_counter(), deadline=10, tries=counted)
    assert (counted.attempts, counted.refusals) == (2, 1)
    assert tries[1][1] == 1  # the node that refused goes last
    assert tries[1][0] - tries[0][0] >= 1.6  # retry_after and a little more (a backoff alone: <= 0.8 s)


async def test_a_resume_refused_for_good_is_not_tried_again() -> None:
    spec = SocketSpec(member=3, token="-", topic="wedding:3")
    worker = Worker(["ws://127.0.0.1:9/a"], [spec])

    async def open_forbidden(_spec: SocketSpec, *, resume: bool, refused_by: int | None = None) -> None:
        raise RefusedForGood("forbidden")

    worker._open = open_forbidden  # type: ignore[assignment,method-assign]
    tries = Tries()
    assert not await resume_one(worker, spec, started=time.perf_counter(), deadline=10, tries=tries)
    assert (tries.attempts, tries.refusals) == (1, 0) and tries.failures == ["attempt 1: refused for good: forbidden"]


def test_a_socket_refused_by_its_own_node_goes_to_the_next_one_first(
    three_ceilings: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    spec = SocketSpec(member=4, token="-", topic="wedding:3")
    order = node_order(4, 3)

    async def nodes_taken() -> list[int]:
        worker = Worker([url for url, _server in three_ceilings], [spec])
        try:
            await worker._open(spec, resume=False, refused_by=order[0])
            first = worker.node_of[4]
            transport = worker.sockets[4].transport
            assert transport is not None
            transport.disconnect()
            await worker._open(spec, resume=True)
            return [first, worker.node_of[4]]
        finally:
            await worker.close()

    # Its own loop, as a worker process has: the ceilings are this test's child processes.
    assert asyncio.run(nodes_taken()) == [order[1], order[0]]
