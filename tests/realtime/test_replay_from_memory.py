"""A resume served from the feed's recent events, with no thread hop (decision 0046)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from channels.db import database_sync_to_async

from realtime.messages import ControlMessage, EventMessage
from realtime.names import Priority
from realtime.node import housekeeping
from realtime.node import hub as hub_module
from realtime.node import replay as replay_module
from realtime.node.feed import WeddingFeed
from realtime.node.recent import FeedEvent, RecentEvents, replay_text_of
from realtime.node.replay import ConnectRead, checked_replay_hop
from realtime.protocol import encode
from realtime.selectors import MembershipView
from realtime.services.events import member_event_publish
from tests.personas import WeddingParty
from tests.realtime.conftest import Client
from tests.realtime.test_member_cache import until
from wedsync.models import Member
from wedsync.permissions import Role

publish_as = database_sync_to_async(member_event_publish)


def feed_event(
    seq: int, *, roles: tuple[str, ...] = ("guest",), members: tuple[int, ...] = (), priority: int = 1
) -> FeedEvent:
    frame = {"op": "event", "topic": "wedding:1", "seq": seq, "type": "chat.message", "data": {}, "replay": False}
    message = EventMessage(wedding=1, seq=seq, priority=priority, roles=list(roles), members=list(members), frame=frame)
    return FeedEvent.of(message)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def seqs(replayed: Any) -> list[int] | None:
    return None if replayed is None else [event.seq for event in replayed]


def test_recent_events_replay_what_they_hold_after_since_and_nothing_older() -> None:
    recent = RecentEvents(after=10, size=3)
    assert seqs(recent.replay(since=10, member_id=1, role="guest", min_priority=0)) == []
    for seq in (11, 12, 13, 14):
        recent.add(feed_event(seq))
    assert recent.upto == 14
    assert seqs(recent.replay(since=12, member_id=1, role="guest", min_priority=0)) == [13, 14]
    assert seqs(recent.replay(since=11, member_id=1, role="guest", min_priority=0)) == [12, 13, 14]
    assert recent.replay(since=10, member_id=1, role="guest", min_priority=0) is None  # 11 no longer held
    assert recent.replay(since=15, member_id=1, role="guest", min_priority=0) is None  # beyond what it has
    assert seqs(recent.replay(since=14, member_id=1, role="guest", min_priority=0)) == []


def test_recent_events_start_again_after_a_skipped_seq() -> None:
    recent = RecentEvents(after=0)
    recent.add(feed_event(1))
    recent.add(feed_event(3))  # 2 never reached the feed in order: nothing before 3 is trusted
    assert recent.replay(since=0, member_id=1, role="guest", min_priority=0) is None
    assert seqs(recent.replay(since=2, member_id=1, role="guest", min_priority=0)) == [3]


def test_recent_events_leave_old_ones_to_the_log() -> None:
    clock = Clock()
    recent = RecentEvents(after=0, seconds=60, clock=clock)
    recent.add(feed_event(1))
    clock.now += 30
    recent.add(feed_event(2))
    clock.now += 40  # 1 is 70 s old, 2 is 40 s old
    assert recent.replay(since=0, member_id=1, role="guest", min_priority=0) is None
    assert seqs(recent.replay(since=1, member_id=1, role="guest", min_priority=0)) == [2]
    clock.now += 300
    recent.add(feed_event(3))  # lets go of 1 and 2: 2 would be fresh again at the clock below
    clock.now -= 300
    assert recent.replay(since=1, member_id=1, role="guest", min_priority=0) is None
    assert seqs(recent.replay(since=2, member_id=1, role="guest", min_priority=0)) == [3]


def test_a_feed_that_could_not_keep_an_event_sends_resumes_to_the_log() -> None:
    feed = SimpleNamespace(epoch="e", last_seq=3, recent=RecentEvents(after=0))
    for seq in (1, 2):
        feed.recent.add(feed_event(seq))  # 3 was taken (last_seq) but never kept
    view = MembershipView(wedding_id=1, member_id=1, role="guest")
    assert WeddingFeed.held_replay(feed, since=1, epoch=None, min_priority=0, membership=view) is None  # type: ignore[arg-type]
    feed.last_seq = 2
    replayed = WeddingFeed.held_replay(feed, since=1, epoch=None, min_priority=0, membership=view)  # type: ignore[arg-type]
    assert seqs(replayed) == [2]


def test_recent_events_replay_only_what_the_member_may_see_marked_replay(monkeypatch) -> None:
    def not_decoded(text: str) -> Any:
        raise AssertionError("a live frame's text is turned into a replay's without decoding it")

    monkeypatch.setattr("realtime.node.recent.json.loads", not_decoded)
    recent = RecentEvents(after=0)
    recent.add(feed_event(1, roles=("planner",)))
    recent.add(feed_event(2, roles=("planner",), members=(7,)))
    recent.add(feed_event(3, roles=("guest",), priority=int(Priority.HIGH)))
    assert seqs(recent.replay(since=0, member_id=7, role="guest", min_priority=0)) == [2, 3]
    assert seqs(recent.replay(since=0, member_id=8, role="guest", min_priority=int(Priority.HIGH))) == [3]
    first = recent.replay(since=2, member_id=8, role="guest", min_priority=0)
    again = recent.replay(since=2, member_id=9, role="guest", min_priority=0)
    assert first is not None and again is not None
    assert first[0].text is again[0].text  # encoded once, for every resume that needs it
    assert first[0].text == encode({**feed_event(3).message.frame, "replay": True})  # the same bytes, not just JSON
    monkeypatch.undo()
    assert json.loads(replay_text_of('{"replay":false,"op":"event"}')) == {"replay": True, "op": "event"}


# --- over the real application ---------------------------------------------------------------------


@pytest.fixture
def replay_hops(monkeypatch) -> list[int]:
    """Each subscribe that went to the database for its replay (the hop), by wedding."""
    hops: list[int] = []
    real = checked_replay_hop

    async def counted(**kwargs: Any) -> Any:
        hops.append(kwargs["wedding_id"])
        return await real(**kwargs)

    monkeypatch.setattr(hub_module, "checked_replay_hop", counted)
    return hops


@pytest.mark.django_db(transaction=True)
async def test_a_resume_the_feed_holds_is_answered_from_memory(party: WeddingParty, sockets, replay_hops) -> None:
    wedding = party.wedding.pk
    planner: Client = await sockets(party.priya)
    await planner.subscribe(wedding)  # the node's feed of the wedding opens
    for n in range(1, 5):
        await publish_as(member=party.priya, type_name="chat.message", data={"text": f"m{n}"})
    await publish_as(member=party.paula, type_name="vendor.status", data={"activity": "en_route"})  # not a guest's
    hub = hub_module._hubs[asyncio.get_running_loop()]
    await until(lambda: hub.feeds[wedding].last_seq == 5)
    replay_hops.clear()
    guest: Client = await sockets(party.gil)
    reply = await guest.subscribe(wedding, since=2, epoch=hub.feeds[wedding].epoch)
    assert (reply["data"]["seq"], reply["data"]["recovered"]) == (5, True)
    replayed = [await guest.receive() for _ in range(2)]
    assert [(e["seq"], e["data"]["text"], e["replay"]) for e in replayed] == [(3, "m3", True), (4, "m4", True)]
    assert await guest.nothing_more()
    assert replay_hops == []  # no hop: the connect's read was the check, the feed's memory the replay
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "live"})
    live = await guest.receive()
    assert (live["seq"], live["replay"]) == (6, False)


@pytest.mark.django_db(transaction=True)
async def test_a_resume_from_before_the_feed_opened_is_read_from_the_log(
    party: WeddingParty, sockets, replay_hops
) -> None:
    wedding = party.wedding.pk
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "before"})
    planner: Client = await sockets(party.priya)
    await planner.subscribe(wedding)
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "after"})
    hub = hub_module._hubs[asyncio.get_running_loop()]
    await until(lambda: hub.feeds[wedding].last_seq == 2)
    guest: Client = await sockets(party.gil)
    await guest.subscribe(wedding, since=0)
    assert [(await guest.receive())["data"]["text"] for _ in range(2)] == ["before", "after"]
    assert replay_hops == [wedding]  # this one only: the planner's first subscribe had nothing to replay
    other_epoch = await guest.subscribe(wedding, since=1, epoch="another")
    assert other_epoch["data"]["recovered"] is False and await guest.nothing_more()


async def crew_message_held(party: WeddingParty, sockets: Any) -> Any:
    """The planner's socket opens the wedding's feed, which then holds a message for photographers."""
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "crew"}, to=["role:photographer"])
    hub = hub_module._hubs[asyncio.get_running_loop()]
    await until(lambda: hub.feeds[party.wedding.pk].last_seq == 1)
    return hub


@pytest.mark.django_db(transaction=True)
async def test_a_member_change_heard_after_the_connect_is_checked_in_the_database(
    party: WeddingParty, sockets, replay_hops
) -> None:
    """The connect's read is trusted only while the node heard of no member change since: here a
    photographer made a guest by a change whose message arrives between the connect and the
    subscribe gets the guest's replay, not what the connect read allowed."""
    wedding = party.wedding.pk
    hub = await crew_message_held(party, sockets)
    photographer: Client = await sockets(party.paula)
    await database_sync_to_async(Member.objects.filter(pk=party.paula.pk).update)(role=Role.GUEST.value)
    generation = hub.members.generation
    changed = ControlMessage(kind="member_updated", user=party.paula.user_id, wedding=wedding, member=party.paula.pk)
    hub_module.node_control_send(changed)()
    await until(lambda: hub.members.generation != generation)
    replay_hops.clear()
    reply = await photographer.subscribe(wedding, since=0)
    assert (reply["data"]["seq"], reply["data"]["recovered"]) == (1, True)
    assert await photographer.nothing_more()  # the crew's message is not a guest's
    assert replay_hops == [wedding]


@pytest.mark.django_db(transaction=True)
async def test_a_change_the_access_check_finds_is_not_trusted_from_the_connect_again(
    party: WeddingParty, sockets, replay_hops
) -> None:
    """A change made without signals (as when its message is lost): the access check ends the
    subscription, and the socket's next subscribe is checked in the database, not against the
    connect's read."""
    wedding = party.wedding.pk
    hub = await crew_message_held(party, sockets)
    photographer: Client = await sockets(party.paula)
    await photographer.subscribe(wedding, since=1)
    await database_sync_to_async(Member.objects.filter(pk=party.paula.pk).update)(role=Role.GUEST.value)
    await housekeeping.access_reconcile(hub)
    assert (await photographer.receive())["op"] == "unsubscribed"
    replay_hops.clear()
    reply = await photographer.subscribe(wedding, since=0)
    assert reply["data"]["recovered"] is True and await photographer.nothing_more()
    assert replay_hops == [wedding]


@pytest.mark.django_db(transaction=True)
async def test_a_change_heard_while_the_feed_opens_is_checked_in_the_database(
    party: WeddingParty, sockets, replay_hops, monkeypatch
) -> None:
    """The connect's read is asked again in the attach's own step: a member change heard while the
    wedding's feed was being opened (its Redis group, its stream head) sends the check to the log."""
    wedding = party.wedding.pk
    guest: Client = await sockets(party.gil)
    hub = hub_module._hubs[asyncio.get_running_loop()]
    opening = hub._feed

    async def feed_opened_meanwhile(wedding_id: int) -> Any:
        hub.members.forget(user_id=party.gil.user_id, wedding_id=wedding_id, source="control")
        return await opening(wedding_id)

    monkeypatch.setattr(hub, "_feed", feed_opened_meanwhile)
    assert (await guest.subscribe(wedding, since=0))["status"] == "ok"
    assert replay_hops == [wedding]


def test_a_connects_read_is_trusted_briefly_and_only_while_nothing_changed() -> None:
    view = MembershipView(wedding_id=1, member_id=2, role="guest")
    read = ConnectRead(memberships=(view,), generation=5, at=100.0)
    assert read.membership(wedding_id=1, generation=5, now=109.9, seconds=10) == view
    assert read.membership(wedding_id=1, generation=5, now=110.0, seconds=10) is None
    assert read.membership(wedding_id=1, generation=6, now=100.0, seconds=10) is None
    assert read.membership(wedding_id=2, generation=5, now=100.0, seconds=10) is None


@pytest.mark.django_db(transaction=True)
async def test_a_subscribe_long_after_its_connect_is_checked_in_the_database(
    party: WeddingParty, sockets, replay_hops, monkeypatch
) -> None:
    """Past CONNECT_READ_SECONDS (here 0) the connect's read is not the check, however long the
    member cache keeps its rows."""
    monkeypatch.setattr(replay_module, "CONNECT_READ_SECONDS", 0.0)
    guest: Client = await sockets(party.gil)
    assert (await guest.subscribe(party.wedding.pk, since=0))["status"] == "ok"
    assert replay_hops == [party.wedding.pk]
