"""Every op has a budget, not only publish (issue 16, item 7): per user across nodes (subscribe,
unsubscribe, presence, ack, auth), per socket for heartbeats; past it the op is answered
rate_limited and the socket stays, and a client that keeps going is closed 4029 with an audit entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from presence.services import presence_device_rtt
from realtime import consumers
from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer
from tests.realtime.nodes import cluster
from tests.realtime.test_nodes import protocols
from wedsync.models import AuditLog

pytestmark = [pytest.mark.django_db(transaction=True)]


def limits(settings, **budgets: int) -> None:
    settings.REALTIME_OP_LIMITS = {**settings.REALTIME_OP_LIMITS, **budgets}


async def test_a_user_past_the_subscribe_budget_is_told_to_wait(party: WeddingParty, sockets, settings) -> None:
    limits(settings, subscribe=3)
    phone, tablet = await sockets(party.priya), await sockets(party.priya)
    assert (await phone.subscribe(party.wedding.pk))["status"] == "ok"
    assert (await tablet.subscribe(party.wedding.pk))["status"] == "ok"
    assert (await phone.subscribe(party.wedding.pk))["status"] == "ok"
    refused = await tablet.subscribe(party.wedding.pk)  # the user's fourth, from either device
    assert refused["error"]["code"] == "rate_limited"
    assert 0 < refused["error"]["retry_after"] <= 60
    assert (await tablet.request("heartbeat"))["status"] == "ok"  # the socket stays
    other = await sockets(party.ana)  # another user's budget is their own
    assert (await other.subscribe(party.wedding.pk))["status"] == "ok"


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("presence", {"state": {"status": "busy"}}),
        ("unsubscribe", {}),
        ("ack", {"seq": 1}),
        ("auth", {"token": "not-a-token"}),
    ],
)
async def test_each_op_has_its_budget(party: WeddingParty, sockets, settings, op: str, fields: dict) -> None:
    limits(settings, **{op: 1})
    client: Client = await sockets(party.priya)
    await client.subscribe(party.wedding.pk)
    topic = {} if op == "auth" else {"topic": f"wedding:{party.wedding.pk}"}
    first = await client.request(op, **topic, **fields)  # answered on its merits (ok, not_found, ...)
    assert first["status"] == "ok" or first["error"]["code"] != "rate_limited"
    second = await client.request(op, **topic, **fields)
    assert second["error"]["code"] == "rate_limited", second


async def test_heartbeats_are_counted_per_socket(party: WeddingParty, sockets, settings) -> None:
    limits(settings, heartbeat=2)
    phone, tablet = await sockets(party.paula), await sockets(party.paula)
    for client in (phone, tablet):
        assert [(await client.request("heartbeat"))["status"] for _ in range(2)] == ["ok", "ok"]
    assert (await phone.request("heartbeat"))["error"]["code"] == "rate_limited"


async def test_a_client_that_ignores_retry_after_is_closed_4029_and_audited(
    party: WeddingParty, sockets, settings
) -> None:
    limits(settings, heartbeat=1)
    settings.REALTIME_ABUSE_REFUSALS = 5
    client: Client = await sockets(party.gil)
    assert (await client.request("heartbeat"))["status"] == "ok"
    for _ in range(4):
        assert (await client.request("heartbeat"))["error"]["code"] == "rate_limited"
    await client.send({"op": "heartbeat", "ref": "last"})
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] != "websocket.close":
        frames.append(await client.communicator.receive_output(timeout=3))
    assert frames[-1] == {"type": "websocket.close", "code": 4029}
    assert '"code":"rate_limited"' in frames[-2]["text"] and '"op":"error"' in frames[-2]["text"]
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.rate_limit.refuse")
    assert entry.details["reason"] == "abuse" and entry.details["refusals"] == 5
    assert entry.details["op"] == "heartbeat" and entry.details["user"] == party.gil.user_id


async def test_an_rtt_swinging_across_a_quality_line_is_stored_at_most_every_30_s(
    party: WeddingParty, sockets, monkeypatch
) -> None:
    stored: list[int] = []
    real = presence_device_rtt

    def counted(**kwargs: Any) -> Any:
        stored.append(kwargs["rtt_ms"])
        return real(**kwargs)

    monkeypatch.setattr(consumers, "presence_device_rtt", counted)
    client: Client = await sockets(party.paula)
    await client.subscribe(party.wedding.pk)
    for rtt in (100, 2000, 100, 2000, 100):  # good, poor, good...: each a new quality class
        assert (await client.request("heartbeat", rtt=rtt))["status"] == "ok"
    assert stored == [100]


@pytest.mark.requires_redis
@pytest.mark.requires_postgres
async def test_two_nodes_share_a_users_budget(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path, extra_env={"REALTIME_OP_LIMITS": '{"subscribe": 3}'}) as nodes:
        a, b = nodes.nodes
        token = await bearer(party.priya)
        topic = f"wedding:{party.wedding.pk}"
        answers = []
        async with (
            connect(a.url, subprotocols=protocols(token)) as on_a,
            connect(b.url, subprotocols=protocols(token)) as on_b,
        ):
            for ws in (on_a, on_b):
                assert json.loads(await ws.recv())["op"] == "welcome"
            for i, ws in enumerate((on_a, on_b, on_a, on_b)):
                await ws.send(json.dumps({"op": "subscribe", "ref": f"s{i}", "topic": topic}))
                while (frame := json.loads(await ws.recv()))["op"] != "reply":
                    continue
                answers.append(frame["status"] if frame["status"] == "ok" else frame["error"]["code"])
        assert answers == ["ok", "ok", "ok", "rate_limited"]
