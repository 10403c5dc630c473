"""Role-based load shedding (issue 22, decision 0041): past nine tenths of its socket budget a node
refuses new guests' sockets, past the budget vendors' too, and likewise when its loop has been
running late, with close 1013, ``unavailable`` and a ``retry_after``; planners, couples and key
people are always let in, sockets already open stay, and a socket that comes to raise an emergency
is let in for as long as it takes to raise it. Each shed is counted and audited."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings
from prometheus_client import REGISTRY

from realtime.limits import shedding
from tests.factories import MemberFactory
from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer, communicator, connect_bearer
from wedsync.models import AuditLog, Member

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]


def shed_count(tier: str, cause: str) -> float:
    return REGISTRY.get_sample_value("wedsync_sockets_shed_total", {"tier": tier, "cause": cause}) or 0.0


shed_rows = database_sync_to_async(
    lambda: list(
        AuditLog.objects.filter(action="realtime.connect.refuse", details__reason__startswith="shed").order_by("id")
    )
)


class Opened:
    """Every socket a test opens, closed at its end."""

    def __init__(self) -> None:
        self.clients: list[Client] = []

    async def member(self, member: Member, device: str, query: str = "") -> Client:
        client = await connect_bearer(member, path=f"/ws/v1/?device={device}{query}")
        self.clients.append(client)
        return client


@pytest.fixture
async def opened() -> AsyncIterator[Opened]:
    from realtime.node import hub as hub_module

    sockets = Opened()
    yield sockets
    for client in sockets.clients:
        await client.close()
    hub = hub_module._hubs.get(asyncio.get_running_loop())
    if hub is not None:
        assert hub.admitting == 0, "a connect that ended left itself counted against the budget"
        await hub.stop()


async def refused(member: Member, device: str) -> tuple[dict[str, Any], int | None]:
    """Connect ``member`` expecting a refusal: the error frame the node sent, and its close code."""
    token = await bearer(member)
    comm = communicator(path=f"/ws/v1/?device={device}", subprotocols=["wedsync.v1", f"bearer.{token}"])
    connected, _ = await comm.connect(timeout=5)
    assert connected  # accepted first, so that a browser can read why it is closed
    frame = json.loads((await comm.receive_output(timeout=5))["text"])
    closing = await comm.receive_output(timeout=5)
    assert closing["type"] == "websocket.close", f"let in: {frame}"
    await comm.disconnect()
    return frame, closing.get("code")


async def fill(opened: Opened, members: list[Member]) -> None:
    for n, member in enumerate(members):
        await opened.member(member, device=f"fill{n}")


@override_settings(REALTIME_SOCKET_BUDGET=10, REALTIME_SHED_LOOP_LAG_SECONDS=0)
async def test_past_the_budget_guests_are_refused_first_then_vendors_and_never_key_people(
    party: WeddingParty, opened: Opened
) -> None:
    guests_before, vendors_before = shed_count("guest", "budget"), shed_count("vendor", "budget")
    # Nine sockets: nine tenths of the budget.
    await fill(
        opened,
        [party.ana, party.ben, party.priya, party.victor, party.vik, party.carmen, party.flora, party.miles, party.gil],
    )

    frame, code = await refused(party.gil, device="phone2")
    assert code == 1013
    assert frame["op"] == "error" and frame["code"] == "unavailable"
    assert frame["retry_after"] == shedding.RETRY_AFTER_SECONDS["guest"]
    await opened.member(party.victor, device="tablet")  # a vendor still comes in: the tenth socket

    frame, code = await refused(party.carmen, device="tablet")
    assert (code, frame["code"], frame["retry_after"]) == (1013, "unavailable", shedding.RETRY_AFTER_SECONDS["vendor"])
    # Past the budget, the couple, the planner and the key people (the photographer, the officiant) come in.
    for member in (party.priya, party.ana, party.paula, party.olu):
        client = await opened.member(member, device="second")
        assert client.welcome is not None and client.welcome["op"] == "welcome"
    # The guest already in keeps their socket.
    guest = opened.clients[8]
    assert (await guest.request("heartbeat"))["status"] == "ok"

    assert shed_count("guest", "budget") - guests_before == 1
    assert shed_count("vendor", "budget") - vendors_before == 1
    rows = await _rows_when(2)
    assert [(row.actor_id, row.outcome, row.details["tier"], row.details["cause"]) for row in rows] == [
        (party.gil.user_id, "refused", "guest", "budget"),
        (party.carmen.user_id, "refused", "vendor", "budget"),
    ]
    assert [row.details["sockets"] for row in rows] == [9, 10]


@override_settings(REALTIME_SOCKET_BUDGET=0, REALTIME_SHED_LOOP_LAG_SECONDS=0.25)
async def test_a_loop_running_late_refuses_guests_then_vendors_until_it_catches_up(
    party: WeddingParty, opened: Opened
) -> None:
    await opened.member(party.priya, device="desk")  # starts the node hub and its lag watch

    @contextlib.asynccontextmanager
    async def running_late(seconds: float) -> AsyncIterator[None]:
        """Hold the loop ``seconds`` at a time, as a node too busy to keep up would, for as long as
        the block lasts (the connects inside it run between the holds, as they would on such a node)."""
        stop = asyncio.Event()

        async def hold() -> None:
            while not stop.is_set():
                time.sleep(seconds)  # noqa: ASYNC251  the point: the loop is blocked
                await asyncio.sleep(shedding.LAG_TICK_SECONDS)

        holding = asyncio.create_task(hold())
        await asyncio.sleep((seconds + shedding.LAG_TICK_SECONDS) * (shedding.LAG_WINDOW_TICKS // 2 + 2))
        try:
            yield
        finally:
            stop.set()
            await holding

    async with running_late(0.35):  # later than the guests' bound, not the vendors' (twice it)
        _frame, code = await refused(party.gil, device="phone")
        assert code == 1013
        await opened.member(party.victor, device="tablet")

    async with running_late(0.6):
        frame, code = await refused(party.carmen, device="tablet")
        assert (code, frame["code"]) == (1013, "unavailable")
        await opened.member(party.ana, device="phone")

    rows = await _rows_when(2)
    assert [(row.details["tier"], row.details["cause"]) for row in rows] == [
        ("guest", "loop_lag"),
        ("vendor", "loop_lag"),
    ]
    assert rows[0].details["loop_lag"] >= 0.25 and rows[1].details["loop_lag"] >= 0.5

    await asyncio.sleep(shedding.LAG_TICK_SECONDS * (shedding.LAG_WINDOW_TICKS + 5))  # caught up
    await opened.member(party.gil, device="phone")


@override_settings(REALTIME_SOCKET_BUDGET=2, REALTIME_SHED_LOOP_LAG_SECONDS=0)
async def test_a_vendor_coming_to_raise_an_emergency_is_let_in_and_stays_once_it_is_raised(
    party: WeddingParty, opened: Opened
) -> None:
    await fill(opened, [party.priya, party.ana])
    _frame, code = await refused(party.victor, device="phone")  # the budget is spent
    assert code == 1013
    florist = await opened.member(party.flora, device="phone", query="&urgent=1")
    assert (await florist.subscribe(party.wedding.id))["status"] == "ok"
    reply = await florist.request(
        "publish", topic=f"wedding:{party.wedding.id}", type="emergency.alert", data={"message": "Fire by the arch"}
    )
    assert reply["status"] == "ok", reply
    socket = next(socket for socket in _node_sockets() if socket.user_id == party.flora.user_id)
    assert socket._urgent_grace is None, "raised: no longer on a clock"
    assert (await florist.request("heartbeat"))["status"] == "ok"
    # A guest cannot raise an emergency: asking to come in for one changes nothing.
    token = await bearer(party.gil)
    comm = communicator(path="/ws/v1/?device=phone&urgent=1", subprotocols=["wedsync.v1", f"bearer.{token}"])
    assert (await comm.connect(timeout=5))[0]
    assert json.loads((await comm.receive_output(timeout=5))["text"])["code"] == "unavailable"
    assert (await comm.receive_output(timeout=5)).get("code") == 1013
    await comm.disconnect()
    rows = await _rows_when(2)
    assert [(row.actor_id, row.details["tier"]) for row in rows] == [
        (party.victor.user_id, "vendor"),
        (party.gil.user_id, "guest"),
    ]


@override_settings(REALTIME_SOCKET_BUDGET=2, REALTIME_SHED_LOOP_LAG_SECONDS=0)
async def test_a_socket_let_in_as_urgent_that_raises_nothing_is_closed_like_the_others(
    party: WeddingParty, opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("realtime.consumers.URGENT_GRACE_SECONDS", 0.3)
    before = shed_count("vendor", "urgent_unused")
    await fill(opened, [party.priya, party.ana])
    florist = await opened.member(party.flora, device="phone", query="&urgent=1")
    frame = await florist.receive(within=3)
    retry = shedding.RETRY_AFTER_SECONDS["vendor"]
    assert (frame["op"], frame["code"], frame["retry_after"]) == ("error", "unavailable", retry)
    closing = await florist.communicator.receive_output(timeout=3)
    assert (closing["type"], closing["code"]) == ("websocket.close", 1013)
    assert shed_count("vendor", "urgent_unused") - before == 1
    rows = await _rows_when(1)
    assert [(row.actor_id, row.details["reason"]) for row in rows] == [(party.flora.user_id, "shed_urgent_unused")]


@override_settings(REALTIME_SOCKET_BUDGET=10, REALTIME_SHED_LOOP_LAG_SECONDS=0)
async def test_guests_arriving_together_cannot_all_pass_one_count_of_the_budget(
    party: WeddingParty, opened: Opened
) -> None:
    # After a node loss its sockets arrive at the survivors at once: each must count those let in
    # before it, even while their audit writes and accepts are still under way.
    await opened.member(party.priya, device="desk")
    guests = await database_sync_to_async(
        lambda: [MemberFactory(wedding=party.wedding, role="guest") for _ in range(16)]
    )()
    tokens = [await bearer(guest) for guest in guests]
    comms = [communicator(path="/ws/v1/?device=phone", subprotocols=["wedsync.v1", f"bearer.{t}"]) for t in tokens]

    async def first_frame(comm: Any) -> str:
        assert (await comm.connect(timeout=10))[0]
        return str(json.loads((await comm.receive_output(timeout=10))["text"])["op"])

    firsts = await asyncio.gather(*(first_frame(comm) for comm in comms))
    try:
        assert firsts.count("welcome") == 8, firsts  # nine tenths of ten, the planner's socket the first
        assert firsts.count("error") == 8
        assert len(_node_sockets()) == 9
    finally:
        for comm in comms:
            await comm.disconnect()


async def _rows_when(count: int) -> list[AuditLog]:
    """The shed rows once ``count`` are written (the node's audit writes in batches)."""
    deadline = time.monotonic() + 5
    while True:
        rows = await shed_rows()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


def _node_sockets() -> list[Any]:
    from realtime.node import hub as hub_module

    hub = hub_module._hubs[asyncio.get_running_loop()]
    return list(hub.sockets.values())


def test_the_most_needed_membership_decides_the_tier() -> None:
    from realtime.selectors import MembershipView

    def view(role: str, key_person: bool = False) -> MembershipView:
        return MembershipView(wedding_id=1, member_id=1, role=role, key_person=key_person)

    assert shedding.shed_tier(memberships=[view("guest")], observer=False) is shedding.ShedTier.GUEST
    assert shedding.shed_tier(memberships=[], observer=False) is shedding.ShedTier.GUEST
    assert shedding.shed_tier(memberships=[view("guest"), view("florist")], observer=False) is shedding.ShedTier.VENDOR
    assert shedding.shed_tier(memberships=[view("florist", key_person=True)], observer=False) is shedding.ShedTier.KEPT
    assert shedding.shed_tier(memberships=[view("guest"), view("planner")], observer=False) is shedding.ShedTier.KEPT
    assert shedding.shed_tier(memberships=[], observer=True) is shedding.ShedTier.KEPT
