"""Presence over the socket, through the real ASGI application, with presence in the test Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
import time_machine
from channels.db import database_sync_to_async

from presence.selectors import presence_devices, presence_snapshot
from presence.services import presence_device_join, presence_device_leave, presence_sweep
from presence.store import MemberChange
from realtime.node import presence as node_presence
from tests.factories import device_presence
from tests.personas import WeddingParty, make_wedding_party
from tests.realtime.conftest import Client
from wedsync.models import AuditLog

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_redis, pytest.mark.requires_postgres]


async def _next_diff(client: Client, within: float = 3) -> dict:
    return await client.presence_diff(within=within)


async def test_a_planner_sees_who_joins_moves_and_leaves(party: WeddingParty, sockets) -> None:
    planner = await sockets(party.priya)
    reply = await planner.subscribe(party.wedding.pk)
    snapshot = reply["data"]["presence"]
    assert snapshot["online"] == {"planner": 1}
    assert snapshot["members"][str(party.priya.pk)]["status"] == "online"

    photographer = await sockets(party.paula)
    await photographer.subscribe(party.wedding.pk)
    joined = await _next_diff(planner)
    assert list(joined["joins"]) == [str(party.paula.pk)]
    assert joined["joins"][str(party.paula.pk)]["role"] == "photographer"

    moved = await photographer.request(
        "presence", topic=f"wedding:{party.wedding.pk}", state={"location": "ceremony_area", "activity": "working"}
    )
    assert moved["status"] == "ok", moved
    update = await _next_diff(planner)
    assert update["updates"][str(party.paula.pk)]["location"] == "ceremony_area"
    assert update["updates"][str(party.paula.pk)]["activity"] == "working"

    await photographer.close()
    left = await _next_diff(planner)
    assert left["leaves"][str(party.paula.pk)]["status"] == "offline"


async def test_guests_get_counts_and_no_presence_frames(party: WeddingParty, sockets) -> None:
    guest = await sockets(party.gil)
    reply = await guest.subscribe(party.wedding.pk)
    assert reply["data"]["presence"] == {"online": {"guest": 1}}
    photographer = await sockets(party.paula)
    second = await photographer.subscribe(party.wedding.pk)
    assert second["data"]["presence"]["online"] == {"guest": 1, "photographer": 1}
    await photographer.request("presence", topic=f"wedding:{party.wedding.pk}", state={"status": "busy"})
    assert await guest.nothing_more(within=0.5, presence=True)


async def test_a_guest_setting_a_location_is_forbidden_and_audited(party: WeddingParty, sockets) -> None:
    guest = await sockets(party.gil)
    await guest.subscribe(party.wedding.pk)
    reply = await guest.request("presence", topic=f"wedding:{party.wedding.pk}", state={"location": "parking"})
    assert reply["error"]["code"] == "forbidden"
    refused = await database_sync_to_async(
        lambda: AuditLog.objects.filter(action="presence.refuse", wedding_id=party.wedding.pk).count()
    )()
    assert refused == 1
    still = await guest.request("heartbeat")  # the socket stays open
    assert still["status"] == "ok"


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ({"battery": 101}, "battery"),
        ({"location": "the_moon"}, "location"),
        ({"activity": "napping"}, "activity"),
        ({"status": "invisible"}, "status"),
        ({"mood": "happy"}, "mood"),
    ],
)
async def test_bad_presence_state_is_refused_naming_the_field(party: WeddingParty, sockets, state, field) -> None:
    vendor = await sockets(party.paula)
    await vendor.subscribe(party.wedding.pk)
    reply = await vendor.request("presence", topic=f"wedding:{party.wedding.pk}", state=state)
    assert reply["error"]["code"] == "invalid"
    assert field in reply["error"]["message"]


async def test_presence_needs_a_subscription(party: WeddingParty, sockets) -> None:
    vendor = await sockets(party.paula)
    reply = await vendor.request("presence", topic=f"wedding:{party.wedding.pk}", state={"status": "away"})
    assert reply["error"]["code"] == "not_subscribed"


async def test_two_devices_merge_into_one_member(party: WeddingParty, sockets) -> None:
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    phone, tablet = await sockets(party.paula), await sockets(party.paula)
    await phone.subscribe(party.wedding.pk)
    assert (await _next_diff(planner))["joins"][str(party.paula.pk)]["devices"] == 1
    await tablet.subscribe(party.wedding.pk)
    assert (await _next_diff(planner))["updates"][str(party.paula.pk)]["devices"] == 2

    await phone.request("presence", topic=f"wedding:{party.wedding.pk}", state={"battery": 40, "charging": False})
    assert (await _next_diff(planner))["updates"][str(party.paula.pk)]["battery"] == 40
    await tablet.request("presence", topic=f"wedding:{party.wedding.pk}", state={"battery": 90, "charging": True})
    newest = (await _next_diff(planner))["updates"][str(party.paula.pk)]
    assert (newest["battery"], newest["charging"]) == (90, True)  # the device that reported last

    await tablet.close()
    after = (await _next_diff(planner))["updates"][str(party.paula.pk)]
    assert after["devices"] == 1
    assert after["battery"] == 40  # the remaining device's
    assert await planner.nothing_more(presence=True)  # one device left: an update, never a leave


async def test_battery_is_told_only_across_steps_and_heartbeats_never(party: WeddingParty, sockets) -> None:
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    vendor = await sockets(party.carmen)
    await vendor.subscribe(party.wedding.pk)
    await _next_diff(planner)  # the join
    topic = f"wedding:{party.wedding.pk}"
    told = []
    for battery in (82, 81, 79, 77, 74, 71, 17, 16, 14):
        await vendor.request("presence", topic=topic, state={"battery": battery})
        await vendor.request("heartbeat", rtt=40)
        if not await planner.nothing_more(within=0.3, presence=True):
            told.append((await planner.presence_diff())["updates"][str(party.carmen.pk)]["battery"])
    # The first reading, then each crossing of a multiple of 5 (80, 75, 20) and of the 15 % line.
    assert told == [82, 79, 74, 17, 14]


# At 23:30 UTC on 13 June 2026 it is 11:30 on the 14th in Auckland, 16:30 on the 13th in Los
# Angeles and 00:30 on the 14th in Lisbon: "today" is the wedding's own local date.
@pytest.mark.parametrize(
    ("time_zone", "day", "interval"),
    [
        ("Pacific/Auckland", 14, 10),
        ("Pacific/Auckland", 13, 30),
        ("America/Los_Angeles", 13, 10),
        ("America/Los_Angeles", 14, 30),
        ("Europe/Lisbon", 14, 10),
        ("Europe/Lisbon", 13, 30),
    ],
)
async def test_the_heartbeat_interval_and_the_dead_device_deadline_follow_the_local_wedding_day(
    sockets, time_zone: str, day: int, interval: int
) -> None:
    with time_machine.travel(dt.datetime(2026, 6, 13, 23, 30, tzinfo=dt.UTC), tick=True):
        party = await database_sync_to_async(make_wedding_party)(date=dt.date(2026, 6, day), time_zone=time_zone)
        vendor = await sockets(party.paula)
        assert vendor.welcome is not None and vendor.welcome["heartbeat_interval"] == interval
        await vendor.subscribe(party.wedding.pk)
        (device,) = await database_sync_to_async(presence_devices)(wedding_id=party.wedding.pk)
        # Offline after missing 2.5 intervals: 25 s on the day, 75 s otherwise.
        assert device.heartbeat_interval == interval
        assert device.deadline - device.last_seen == 2.5 * interval


@pytest.fixture
def fast_presence_flush(settings) -> None:
    settings.REALTIME_PRESENCE_FLUSH_SECONDS = 0.05  # the node hands heard heartbeats over at once


async def test_a_phone_that_goes_silent_is_offline_after_missed_heartbeats_and_back_when_heard(
    party: WeddingParty, sockets, fast_presence_flush
) -> None:
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    phone = await sockets(party.paula)  # its socket stays open, as a dead phone's may for a while
    await phone.subscribe(party.wedding.pk)
    await _next_diff(planner)  # the join
    state = {"location": "photo_location", "battery": 41, "status": "busy"}
    assert (await phone.request("presence", topic=f"wedding:{party.wedding.pk}", state=state))["status"] == "ok"
    await _next_diff(planner)  # the update
    with time_machine.travel(time.time() + 2.5 * 30 + 1, tick=True):
        await planner.request("heartbeat")  # the planner is still heard; the phone is not
        await asyncio.sleep(0.3)  # the node's next heartbeat batch
        told = await database_sync_to_async(presence_sweep)()
        assert told == 1
        left = await _next_diff(planner)
        assert list(left["leaves"]) == [str(party.paula.pk)]
        snapshot = await database_sync_to_async(presence_snapshot)(wedding_id=party.wedding.pk, viewer_role="planner")
        assert list(snapshot.wire["members"]) == [str(party.priya.pk)]

        await phone.request("heartbeat")  # the phone is heard again on the same socket
        back = await _next_diff(planner)
        assert list(back["joins"]) == [str(party.paula.pk)]
        # It comes back as it was: the client has no reason to say it all again.
        rejoined = back["joins"][str(party.paula.pk)]
        assert (rejoined["location"], rejoined["battery"], rejoined["status"]) == ("photo_location", 41, "busy")


async def test_diffs_lost_on_the_way_are_repaired_by_the_nodes_reconciliation(
    party: WeddingParty, sockets, settings
) -> None:
    settings.REALTIME_PRESENCE_RECONCILE_SECONDS = 0.3
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    ana = await sockets(party.ana)  # online before, in the planner's view through a diff
    await ana.subscribe(party.wedding.pk)
    assert list((await _next_diff(planner))["joins"]) == [str(party.ana.pk)]

    def lost(change: MemberChange) -> None:  # as the channel layer drops a message at capacity
        return None

    phone = device_presence(party.paula, device="phone-lost")
    await database_sync_to_async(presence_device_join)(device=phone, tell=lost)
    repaired = await _next_diff(planner, within=3)
    assert list(repaired["joins"]) == [str(party.paula.pk)] and not repaired["updates"]
    await database_sync_to_async(presence_device_leave)(
        wedding_id=party.wedding.pk, member_id=party.paula.pk, device="phone-lost", tell=lost
    )
    repaired = await _next_diff(planner, within=3)
    assert list(repaired["leaves"]) == [str(party.paula.pk)]
    assert repaired["leaves"][str(party.paula.pk)]["status"] == "offline"
    # What the planner was shown (its snapshot, Ana's join) is never told again.
    assert await planner.nothing_more(within=1.0, presence=True)


async def test_a_round_reads_a_busy_node_in_parts_and_repairs_every_wedding(
    party: WeddingParty, sockets, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.REALTIME_PRESENCE_RECONCILE_SECONDS = 0.3
    monkeypatch.setattr(node_presence, "RECONCILE_MEMBERS", 1)  # a wedding per read here
    reads: list[list[int]] = []
    real_told = node_presence._told

    def told(weddings: list[int]) -> dict:
        reads.append(sorted(weddings))
        return real_told(weddings)

    monkeypatch.setattr(node_presence, "_told", told)
    other = await database_sync_to_async(make_wedding_party)()
    viewers = []
    for wedding_party in (party, other):
        planner = await sockets(wedding_party.priya)
        await planner.subscribe(wedding_party.wedding.pk)
        ana = await sockets(wedding_party.ana)  # shown by the node, so its wedding has a size
        await ana.subscribe(wedding_party.wedding.pk)
        assert list((await _next_diff(planner))["joins"]) == [str(wedding_party.ana.pk)]
        viewers.append(planner)

    def lost(change: MemberChange) -> None:  # as the channel layer drops a message at capacity
        return None

    for wedding_party in (party, other):
        phone = device_presence(wedding_party.paula, device="phone-lost")
        await database_sync_to_async(presence_device_join)(device=phone, tell=lost)
    for planner, wedding_party in zip(viewers, (party, other), strict=True):
        repaired = await _next_diff(planner, within=3)
        assert list(repaired["joins"]) == [str(wedding_party.paula.pk)]
    assert reads and all(len(read) == 1 for read in reads)  # never both weddings in one read
    assert {wedding for read in reads for wedding in read} == {party.wedding.pk, other.wedding.pk}
