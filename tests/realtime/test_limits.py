"""Rate limits per member and device limits per user (PROTOCOL.md section 5), one node."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import time_machine
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import override_settings

from realtime.limits.node import Limits
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
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.device_limit.close")
    assert entry.details == {
        "user": party.gil.user_id,
        "connection": third.welcome["session"],
        "closed": [first.welcome["session"]],
        "policy": "close_oldest",
    }


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
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.device_limit.close")
    assert entry.details["closed"] == [entry.details["connection"]] and entry.details["policy"] == "refuse_newest"


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


@pytest.fixture
async def devices() -> AsyncIterator[tuple[Limits, aioredis.Redis, int]]:
    """This node's device limits on the test Redis, a plain client to look at them, and a user id of
    its own (keys are per user, so parallel runs on the same Redis do not meet)."""
    # The tests using this carry requires_redis; the test settings always name a Redis.
    redis_url: str = settings.REDIS_URL or ""
    limits, redis = Limits(), aioredis.Redis.from_url(redis_url, decode_responses=True)
    user_id = 10**9 + secrets.randbelow(10**9)
    yield limits, redis, user_id
    key = f"wedsync:devices:{user_id}"
    connections: list[str] = await redis.zrange(key, 0, -1)  # type: ignore[assignment]  # decoded
    await redis.delete(key, *(f"wedsync:device-alive:{c}" for c in connections))
    await redis.aclose()
    await limits.close()


@pytest.mark.requires_redis
async def test_every_device_of_a_reconnect_storm_is_counted(devices: tuple[Limits, aioredis.Redis, int]) -> None:
    """Many more connects at once than the node has Redis connections: each waits its turn and is
    counted (none is let in uncounted because the pool ran dry)."""
    limits, _redis, user_id = devices
    overs = await asyncio.gather(
        *(limits.device_connect(user_id=user_id, connection_id=f"storm{n}", limit=1) for n in range(300))
    )
    assert sorted(len(counted.over) for counted in overs) == list(range(300))  # the k-th to arrive finds k-1 before it


@pytest.mark.requires_redis
async def test_a_device_whose_node_stopped_refreshing_stops_counting(
    devices: tuple[Limits, aioredis.Redis, int],
) -> None:
    limits, redis, user_id = devices
    assert (await limits.device_connect(user_id=user_id, connection_id="old", limit=1)).over == []
    assert (await limits.device_connect(user_id=user_id, connection_id="other", limit=1)).over == ["old"]
    await redis.delete("wedsync:device-alive:old")  # its node died: nothing refreshes the entry
    assert (await limits.device_connect(user_id=user_id, connection_id="new", limit=1)).over == ["other"]
    assert await redis.zrange(f"wedsync:devices:{user_id}", 0, -1) == ["other", "new"]
    assert 0 < await redis.ttl("wedsync:device-alive:new") <= 60
    await limits.device_disconnect(user_id=user_id, connection_id="new")
    assert await redis.zrange(f"wedsync:devices:{user_id}", 0, -1) == ["other"]
    assert not await redis.exists("wedsync:device-alive:new")


async def _reconnect_counts(limits: Limits, user_id: int) -> None:
    """A device's connects are counted per device key over the last hour (presence's connection
    quality), in the same call that counts it against the device limit."""
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        counts = []
        for n in range(3):
            counted = await limits.device_connect(user_id=user_id, connection_id=f"c{n}", limit=5, device_key="phone")
            counts.append(counted.connects)
            clock.shift(1)
        assert counts == [1, 2, 3]
        clock.shift(3600 - 1.5)  # the first two fall out of the hour
        later = await limits.device_connect(user_id=user_id, connection_id="c3", limit=5, device_key="phone")
        assert later.connects == 2
        other = await limits.device_connect(user_id=user_id, connection_id="c4", limit=5, device_key="camera")
        assert other.connects == 1


@pytest.mark.requires_redis
async def test_reconnects_are_counted_over_the_last_hour_in_redis(devices: tuple[Limits, aioredis.Redis, int]) -> None:
    limits, redis, user_id = devices
    await _reconnect_counts(limits, user_id)
    assert 0 < await redis.ttl(f"wedsync:connects:{user_id}:phone") <= 3600
    await redis.delete(f"wedsync:connects:{user_id}:phone", f"wedsync:connects:{user_id}:camera")


async def test_reconnects_are_counted_over_the_last_hour_in_process() -> None:
    with override_settings(REDIS_URL=None):
        limits = Limits()
    await _reconnect_counts(limits, 7)
