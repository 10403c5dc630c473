"""Rate limits per member and device limits per user (PROTOCOL.md section 5), one node."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer, communicator
from wedsync.models import AuditLog

pytestmark = [pytest.mark.django_db(transaction=True)]


async def chat(client: Client, wedding_id: int, text: str) -> dict:
    return await client.request("publish", topic=f"wedding:{wedding_id}", type="chat.message", data={"text": text})


async def test_a_guest_may_send_five_messages_a_minute(party: WeddingParty, sockets) -> None:
    guest = await sockets(party.gil)
    await guest.subscribe(party.wedding.pk)
    for i in range(5):
        assert (await chat(guest, party.wedding.pk, f"m{i}"))["status"] == "ok"
        assert (await guest.receive())["op"] == "event"
    refused = await chat(guest, party.wedding.pk, "one too many")
    assert refused["error"]["code"] == "rate_limited"
    assert 0 < refused["error"]["retry_after"] <= 60
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.rate_limit.refuse")
    assert (entry.wedding_id, entry.outcome) == (party.wedding.pk, "refused")
    assert (await guest.request("heartbeat"))["status"] == "ok"  # the socket stays


async def test_limits_come_from_settings(party: WeddingParty, sockets, settings) -> None:
    settings.REALTIME_RATE_LIMITS = {**settings.REALTIME_RATE_LIMITS, "guest": 1}
    guest = await sockets(party.gil)
    await guest.subscribe(party.wedding.pk)
    assert (await chat(guest, party.wedding.pk, "one"))["status"] == "ok"
    await guest.receive()
    assert (await chat(guest, party.wedding.pk, "two"))["error"]["code"] == "rate_limited"


async def test_emergencies_are_never_rate_limited(party: WeddingParty, sockets, settings) -> None:
    settings.REALTIME_RATE_LIMITS = {**settings.REALTIME_RATE_LIMITS, "venue": 1}
    venue = await sockets(party.victor)
    await venue.subscribe(party.wedding.pk)
    for i in range(5):
        reply = await venue.request(
            "publish", topic=f"wedding:{party.wedding.pk}", type="emergency.alert", data={"message": f"fire {i}"}
        )
        assert reply["status"] == "ok"
        await venue.receive()


async def test_one_device_too_many_closes_the_oldest_with_4029(party: WeddingParty, sockets) -> None:
    first, second = await sockets(party.gil), await sockets(party.gil)  # guests may have 2
    third = await sockets(party.gil)
    error = await first.receive()
    assert (error["op"], error["code"]) == ("error", "forbidden")
    assert await first.communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": 4029}
    for client in (second, third):
        assert (await client.request("heartbeat"))["status"] == "ok"


async def test_refuse_newest_policy(party: WeddingParty, sockets, settings) -> None:
    settings.REALTIME_DEVICE_LIMIT_POLICY = "refuse_newest"
    first, second = await sockets(party.gil), await sockets(party.gil)
    third = communicator(subprotocols=["wedsync.v1", f"bearer.{await bearer(party.gil)}"])
    assert (await third.connect())[0]
    error = await third.receive_json_from(timeout=3)
    assert (error["op"], error["code"]) == ("error", "forbidden")
    assert await third.receive_output(timeout=3) == {"type": "websocket.close", "code": 4029}
    for client in (first, second):
        assert (await client.request("heartbeat"))["status"] == "ok"


async def test_a_closed_device_frees_its_place(party: WeddingParty, sockets) -> None:
    first, second = await sockets(party.gil), await sockets(party.gil)
    await first.close()
    third = await sockets(party.gil)
    for client in (second, third):
        assert (await client.request("heartbeat"))["status"] == "ok"


async def test_an_idempotent_retry_is_answered_even_past_the_budget(party: WeddingParty, sockets, settings) -> None:
    settings.REALTIME_RATE_LIMITS = {**settings.REALTIME_RATE_LIMITS, "guest": 1}
    guest = await sockets(party.gil)
    await guest.subscribe(party.wedding.pk)
    fields = {"topic": f"wedding:{party.wedding.pk}", "type": "chat.message", "data": {"text": "hi"}}
    first = await guest.request("publish", idempotency_key="k", **fields)
    retry = await guest.request("publish", idempotency_key="k", **fields)
    assert retry["status"] == "ok" and retry["data"] == first["data"]
    assert (await guest.request("publish", idempotency_key="other", **fields))["error"]["code"] == "rate_limited"
