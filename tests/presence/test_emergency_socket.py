"""Emergency mode end to end, through the real ASGI application: the alarm opens it, a vendor's
widened message reaches a guest's socket only while it is open, and ``emergency.resolved`` reaches
everyone's socket when the planner resolves it."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from presence.emergency.services import emergency_resolve
from presence.models import Emergency
from tests.personas import WeddingParty
from tests.realtime.conftest import Client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_redis, pytest.mark.requires_postgres]


async def _next_event(client: Client, event_type: str, within: float = 5) -> dict:
    while True:
        frame = await client.receive(within=within)
        if frame.get("op") == "event" and frame.get("type") == event_type:
            return frame


def _status(party: WeddingParty) -> dict:
    return {"topic": f"wedding:{party.wedding.pk}", "type": "vendor.status", "data": {"activity": "setup"}}


async def test_a_resolved_emergency_reaches_every_socket_and_ends_the_widening(party: WeddingParty, sockets) -> None:
    topic = f"wedding:{party.wedding.pk}"
    planner, guest, caterer = await sockets(party.priya), await sockets(party.gil), await sockets(party.carmen)
    for client in (planner, guest, caterer):
        assert (await client.subscribe(party.wedding.pk))["status"] == "ok"

    alarm = await caterer.request("publish", topic=topic, type="emergency.alert", data={"message": "Fire"})
    assert alarm["status"] == "ok", alarm
    assert (await _next_event(guest, "emergency.alert"))["priority"] == "emergency"
    emergency = await database_sync_to_async(Emergency.objects.get)()
    assert emergency.resolved_at is None

    # In emergency mode the caterer's status reaches the guests it names.
    widened = await caterer.request("publish", to=["role:guest"], **_status(party))
    assert widened["status"] == "ok", widened
    assert (await _next_event(guest, "vendor.status"))["seq"] == widened["data"]["seq"]

    await database_sync_to_async(emergency_resolve)(
        wedding_id=party.wedding.pk, emergency_id=emergency.pk, user=party.priya.user
    )
    for client in (planner, guest, caterer):
        frame = await _next_event(client, "emergency.resolved")
        assert (frame["priority"], frame["from"]) == ("critical", None)
        assert (frame["data"]["emergency"], frame["data"]["emergency_mode"]) == (emergency.pk, False)
        assert frame["data"]["alert_seq"] == alarm["data"]["seq"]
    # A guest acknowledges it like any critical event.
    ack = await guest.request("ack", topic=topic, seq=frame["seq"])
    assert ack["status"] == "ok", ack

    # Afterwards the same publish is narrowed again: the guest hears nothing.
    narrowed = await caterer.request("publish", to=["role:guest"], **_status(party))
    assert narrowed["status"] == "ok"
    assert await guest.nothing_more(within=0.5)


@override_settings(PRESENCE_EMERGENCY_NEW_PER_MEMBER=1)
async def test_repeated_alarms_reach_everyone_as_updates_and_one_too_many_is_refused_on_an_open_socket(
    party: WeddingParty, sockets, monkeypatch
) -> None:
    monkeypatch.setattr("realtime.node.housekeeping.RESEND_SECONDS", 1.0)
    topic = f"wedding:{party.wedding.pk}"
    planner, caterer = await sockets(party.priya), await sockets(party.carmen)
    for client in (planner, caterer):
        assert (await client.subscribe(party.wedding.pk))["status"] == "ok"

    replies = [
        await caterer.request("publish", topic=topic, type="emergency.alert", data={"message": f"Fire {n}"})
        for n in range(3)
    ]
    assert [reply["status"] for reply in replies] == ["ok"] * 3
    seqs = [reply["data"]["seq"] for reply in replies]
    emergency = await database_sync_to_async(Emergency.objects.get)()
    alarms = [await _next_event(planner, "emergency.alert") for _ in range(3)]
    assert [frame["seq"] for frame in alarms] == seqs
    assert alarms[0]["data"] == {"message": "Fire 0"}
    for n, frame in enumerate(alarms[1:], start=1):
        assert frame["priority"] == "emergency"
        assert frame["data"] == {"message": f"Fire {n}", "emergency": emergency.pk, "alert_seq": seqs[0], "repeat": n}
    # Unacknowledged, the alarm is sent again; its repeats are not.
    resent = [frame for frame in [await planner.receive(within=5) for _ in range(2)] if frame.get("resent")]
    assert {frame["seq"] for frame in resent} == {seqs[0]}

    await database_sync_to_async(emergency_resolve)(
        wedding_id=party.wedding.pk, emergency_id=emergency.pk, user=party.priya.user
    )
    refused = await caterer.request("publish", topic=topic, type="emergency.alert", data={"message": "Fire again"})
    assert refused["status"] == "error"
    assert refused["error"]["code"] == "rate_limited"
    assert 0 < refused["error"]["retry_after"] <= 600
    # The socket stays open and usable.
    chat = await caterer.request("publish", topic=topic, type="chat.message", data={"text": "Calling the planner"})
    assert chat["status"] == "ok", chat
