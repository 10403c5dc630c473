"""A node's own events go straight to its feeds, never ahead of a control it sent before them and
never past another node's event still crossing Redis (realtime.node.local, decision 0050)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from realtime import layer_send
from realtime.messages import ControlMessage, EventMessage, layer_decode, layer_encode
from realtime.node import housekeeping
from realtime.node.feed import WeddingFeed
from realtime.node.local import CONTROL_WAIT_SECONDS, LocalHandOver
from tests.personas import WeddingParty

REVOKED = ControlMessage(kind="tokens_revoked", user=987654, generation=3)


def _event(seq: int) -> EventMessage:
    return EventMessage(wedding=1, seq=seq, priority=2, roles=["guest"], members=[], frame={"op": "event"})


def test_a_control_holds_events_back_until_heard_from_redis() -> None:
    local = LocalHandOver()
    assert local.events_may_pass(now=100.0)
    local.control_sent(REVOKED, now=100.0)
    assert not local.events_may_pass(now=101.0)
    local.control_heard(ControlMessage(kind="tokens_revoked", user=1, generation=3))  # someone else's
    assert not local.events_may_pass(now=101.0)
    heard = layer_decode(layer_encode(REVOKED))  # the copy Redis brings back
    assert isinstance(heard, ControlMessage)
    local.control_heard(heard)
    assert local.events_may_pass(now=101.0)


def test_only_controls_that_end_access_hold_events() -> None:
    local = LocalHandOver()
    local.control_sent(ControlMessage(kind="close_connection", user=1, connection="c1"), now=100.0)
    local.control_sent(ControlMessage(kind="member_updated", user=1), now=100.0)
    assert local.events_may_pass(now=100.0)
    local.control_sent(ControlMessage(kind="member_changed", user=1, wedding=4, reason="removed"), now=100.0)
    assert not local.events_may_pass(now=100.0)


def test_a_control_never_heard_back_stops_holding_events_after_a_while() -> None:
    local = LocalHandOver()
    local.control_sent(REVOKED, now=100.0)
    assert not local.events_may_pass(now=100.0 + CONTROL_WAIT_SECONDS)
    assert local.events_may_pass(now=100.0 + CONTROL_WAIT_SECONDS + 0.1)


@pytest.fixture
async def feed() -> AsyncIterator[WeddingFeed]:
    """A feed of wedding 1 that has seen up to seq 3."""
    opened = WeddingFeed(wedding_id=1, last_seq=3, epoch="e")
    yield opened
    opened.stop()


async def test_a_feed_takes_a_local_event_only_when_it_is_the_next(feed: WeddingFeed) -> None:
    feed.offer_next(_event(5))  # 4 is another node's, still on its way: Redis brings both
    assert feed.offered == 3
    feed.offer_next(_event(4))
    assert feed.offered == 4
    feed.offer(_event(4))  # Redis's copies of 4 (a duplicate now) and 5
    feed.offer(_event(5))
    assert feed.offered == 5
    feed.offer_next(_event(6))
    assert feed.offered == 6


async def test_a_feed_that_read_ahead_from_the_log_takes_the_local_event_after_it(feed: WeddingFeed) -> None:
    feed.last_seq = 8  # a repair read 4-8 from the log; none of them came through the inbox
    feed.offer_next(_event(5))
    assert feed.offered == 3
    feed.offer_next(_event(9))
    assert feed.offered == 9


@pytest.fixture
def redis_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.Event]:
    """Sends to Redis wait until the test sets the gate; the heads poll (which would read the log) is off."""
    gate = asyncio.Event()
    send = layer_send._send

    async def gated_send(group: str, message: object) -> None:
        await gate.wait()
        await send(group, message)  # type: ignore[arg-type]

    async def no_heads_poll(hub: object) -> None:
        return None

    monkeypatch.setattr(layer_send, "_send", gated_send)
    monkeypatch.setattr(housekeeping, "heads_poll", no_heads_poll)
    yield gate
    gate.set()


@pytest.mark.requires_redis
@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
async def test_redis_copy_of_a_local_event_is_dropped_as_a_duplicate(
    party: WeddingParty, sockets, redis_gate: asyncio.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered_seqs: list[int] = []
    offer = WeddingFeed.offer

    def counted_offer(feed: WeddingFeed, message: EventMessage) -> None:
        offered_seqs.append(message.seq)
        offer(feed, message)

    monkeypatch.setattr(WeddingFeed, "offer", counted_offer)
    guest, planner = await sockets(party.gil), await sockets(party.priya)
    for client in (guest, planner):
        await client.subscribe(party.wedding.pk)
    reply = await guest.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "hi"}
    )
    assert reply["status"] == "ok"
    event = await planner.receive()  # before Redis has it: the local hand-over
    assert event["op"] == "event" and event["seq"] == 1
    assert offered_seqs == [1]
    redis_gate.set()
    async with asyncio.timeout(5):
        while offered_seqs != [1, 1]:  # noqa: ASYNC110  Redis's copy reaches the feed
            await asyncio.sleep(0.02)
    assert await planner.nothing_more()  # and the feed dropped it


@pytest.mark.requires_redis
@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
async def test_an_event_does_not_overtake_a_control_this_node_sent_before_it(
    party: WeddingParty, sockets, redis_gate: asyncio.Event
) -> None:
    guest, planner = await sockets(party.gil), await sockets(party.priya)
    for client in (guest, planner):
        await client.subscribe(party.wedding.pk)
    layer_send.layer_group_send("nodes", REVOKED)  # what a revocation's commit sends (nobody here)
    reply = await guest.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "hi"}
    )
    assert reply["status"] == "ok"
    assert await planner.nothing_more(within=0.5)  # held: the control is not back from Redis yet
    redis_gate.set()
    event = await planner.receive()  # the control came back, then the event through Redis
    assert event["op"] == "event" and event["seq"] == 1
    assert await planner.nothing_more()
    redis_gate.clear()  # Redis silent again: with the control heard, the next event goes straight
    reply = await guest.request("publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "2"})
    assert reply["status"] == "ok"
    event = await planner.receive()
    assert event["op"] == "event" and event["seq"] == 2
