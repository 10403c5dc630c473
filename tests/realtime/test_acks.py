"""``ack``: emergencies and critical events are sent again until each member acknowledges them."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from realtime.models import EventAck
from realtime.services.events import member_event_publish
from tests.personas import WeddingParty

pytestmark = [pytest.mark.django_db(transaction=True)]

publish_as = database_sync_to_async(member_event_publish)


async def test_unacknowledged_emergencies_are_resent_until_acknowledged(
    party: WeddingParty, sockets, monkeypatch
) -> None:
    monkeypatch.setattr("realtime.node.housekeeping.RESEND_SECONDS", 1.0)
    planner, guest = await sockets(party.priya), await sockets(party.gil)
    topic = f"wedding:{party.wedding.pk}"
    for client in (planner, guest):
        await client.subscribe(party.wedding.pk)
    published = await publish_as(member=party.victor, type_name="emergency.alert", data={"message": "fire"})
    for client in (planner, guest):
        first = await client.receive()
        assert (first["seq"], first["priority"], "resent" in first) == (published.seq, "emergency", False)
    assert (await guest.request("ack", topic=topic, seq=published.seq))["status"] == "ok"
    again = await planner.receive(within=5)
    assert (again["seq"], again["resent"]) == (published.seq, True)
    assert await guest.nothing_more(within=2.5)  # acknowledged: never sent again
    await planner.send({"op": "ack", "topic": topic, "seq": published.seq})  # no ref: no reply
    async with asyncio.timeout(6):  # a re-send already on its way may still arrive, then none
        while not await planner.nothing_more(within=1.2):
            await planner.receive()
    assert await planner.nothing_more(within=2.5)
    acked = await database_sync_to_async(lambda: sorted(EventAck.objects.values_list("member_id", flat=True)))()
    assert acked == sorted([party.gil.pk, party.priya.pk])


async def test_acks_are_checked(party: WeddingParty, sockets) -> None:
    guest = await sockets(party.gil)
    topic = f"wedding:{party.wedding.pk}"
    await guest.subscribe(party.wedding.pk)
    chat = await publish_as(member=party.priya, type_name="chat.message", data={"text": "hello"})
    await guest.receive()
    assert (await guest.request("ack", topic=topic, seq=chat.seq))["error"]["code"] == "invalid"
    assert (await guest.request("ack", topic=topic, seq=999))["error"]["code"] == "not_found"
    other = f"wedding:{party.wedding.pk + 1}"
    assert (await guest.request("ack", topic=other, seq=1))["error"]["code"] == "not_subscribed"
