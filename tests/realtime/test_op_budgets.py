"""Every op has a budget, not only publish (issue 16, item 7): per user across nodes (subscribe,
unsubscribe, presence, ack, auth), per socket for heartbeats; past it the op is answered
rate_limited and the socket stays, and a client that keeps going is closed 4029 with an audit entry."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from presence.services import presence_device_rtt
from realtime import socket_budget
from realtime.limits.ops import OP_WINDOW_SECONDS
from realtime.node import presence as node_presence
from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer
from tests.realtime.nodes import cluster
from tests.realtime.test_nodes import protocols
from wedsync.models import AuditLog

pytestmark = [pytest.mark.django_db(transaction=True)]


def limits(settings, **budgets: int) -> None:
    settings.REALTIME_OP_LIMITS = {**settings.REALTIME_OP_LIMITS, **budgets}


async def test_a_user_past_the_subscribe_budget_is_told_to_wait(party: WeddingParty, sockets, settings) -> None:
    limits(settings, subscribe=5)
    settings.REALTIME_DEVICE_LIMITS = {**settings.REALTIME_DEVICE_LIMITS, "planner": 2}  # resume room: 1 x 2 x 2
    phone, tablet = await sockets(party.priya), await sockets(party.priya)
    for client in (phone, tablet, phone, tablet, phone):
        assert (await client.subscribe(party.wedding.pk))["status"] == "ok"
    refused = await tablet.subscribe(party.wedding.pk)  # the user's sixth, from either device
    assert refused["error"]["code"] == "rate_limited"
    assert 0 < refused["error"]["retry_after"] <= 60
    assert (await tablet.request("heartbeat"))["status"] == "ok"  # the socket stays
    other = await sockets(party.ana)  # another user's budget is their own
    assert (await other.subscribe(party.wedding.pk))["status"] == "ok"


async def test_the_subscribe_budget_makes_room_for_a_resume_of_every_wedding(
    party: WeddingParty, sockets, settings
) -> None:
    from tests.personas import make_wedding_party

    limits(settings, subscribe=2)
    others = [await database_sync_to_async(make_wedding_party)() for _ in range(2)]

    def join_them() -> None:  # the planner plans three weddings
        for other in others:
            other.priya.user = party.priya.user
            other.priya.save()

    await database_sync_to_async(join_them)()
    settings.REALTIME_DEVICE_LIMITS = {**settings.REALTIME_DEVICE_LIMITS, "planner": 1}  # room: 3 x 1 x 2 = 6
    client: Client = await sockets(party.priya)
    weddings = [party.wedding.pk, *(other.wedding.pk for other in others)]
    answers = [(await client.subscribe(wedding))["status"] for wedding in weddings * 2]
    assert answers == ["ok"] * 6
    assert (await client.subscribe(party.wedding.pk))["error"]["code"] == "rate_limited"


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("presence", {"state": {"status": "busy"}}),
        ("unsubscribe", {}),
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


async def test_a_socket_may_ack_every_alarm_it_was_sent_and_a_little_more(
    party: WeddingParty, sockets, monkeypatch
) -> None:
    from realtime.services.events import member_event_publish

    monkeypatch.setattr(socket_budget, "ACK_SLACK", 1)
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    topic = f"wedding:{party.wedding.pk}"
    for n in range(4):  # an alarm and three repeats of it: four frames to acknowledge
        await database_sync_to_async(member_event_publish)(
            member=party.victor, type_name="emergency.alert", data={"message": f"smoke {n}"}
        )
    seqs = [(await planner.receive())["seq"] for _ in range(4)]
    for seq in seqs:
        assert (await planner.request("ack", topic=topic, seq=seq))["status"] == "ok"
    assert (await planner.request("ack", topic=topic, seq=seqs[0]))["status"] == "ok"  # the slack
    assert (await planner.request("ack", topic=topic, seq=seqs[0]))["error"]["code"] == "rate_limited"
    await planner.send({"op": "ack", "topic": topic, "seq": seqs[0]})  # no ref: refused without a reply
    assert await planner.nothing_more()


async def _early_in_a_heartbeat_window(room: float = 15.0) -> None:
    """Waits, if need be, until the per-socket heartbeat window (a minute of the monotonic clock)
    has ``room`` seconds left, so that a test's burst is counted in one window: one that crossed
    into the next would find its budget full again."""
    left = OP_WINDOW_SECONDS - time.monotonic() % OP_WINDOW_SECONDS
    if left < room:
        await asyncio.sleep(left + 0.05)


async def test_heartbeats_are_counted_per_socket(party: WeddingParty, sockets, settings) -> None:
    limits(settings, heartbeat=12)
    await _early_in_a_heartbeat_window()
    phone, tablet = await sockets(party.paula), await sockets(party.paula)
    for client in (phone, tablet):
        assert [(await client.request("heartbeat"))["status"] for _ in range(12)] == ["ok"] * 12
    assert (await phone.request("heartbeat"))["error"]["code"] == "rate_limited"


async def test_a_client_that_ignores_retry_after_is_closed_4029_and_audited(
    party: WeddingParty, sockets, settings
) -> None:
    limits(settings, heartbeat=12)
    settings.REALTIME_ABUSE_REFUSALS = 5
    await _early_in_a_heartbeat_window()
    client: Client = await sockets(party.gil)
    for _ in range(12):
        assert (await client.request("heartbeat"))["status"] == "ok"
    # Frames already on their way when the first refusal went out are forgiven (2 s)...
    for _ in range(20):
        assert (await client.request("heartbeat"))["error"]["code"] == "rate_limited"
    await asyncio.sleep(2.1)
    # ... what comes after is the client ignoring retry_after.
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

    monkeypatch.setattr(node_presence, "presence_device_rtt", counted)
    client: Client = await sockets(party.paula)
    await client.subscribe(party.wedding.pk)
    for rtt in (100, 2000, 100, 2000, 100):  # good, poor, good...: each a new quality class
        assert (await client.request("heartbeat", rtt=rtt))["status"] == "ok"
    assert stored == [100]


@pytest.mark.requires_redis
@pytest.mark.requires_postgres
async def test_two_nodes_share_a_users_budget(party: WeddingParty, tmp_path: Path) -> None:
    env = {"REALTIME_OP_LIMITS": '{"subscribe": 3}', "REALTIME_DEVICE_LIMITS": '{"planner": 2}'}  # room: 1 x 2 x 2
    with cluster(tmp_path, extra_env=env) as nodes:
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
            for i, ws in enumerate((on_a, on_b, on_a, on_b, on_a)):
                await ws.send(json.dumps({"op": "subscribe", "ref": f"s{i}", "topic": topic}))
                while (frame := json.loads(await ws.recv()))["op"] != "reply":
                    continue
                answers.append(frame["status"] if frame["status"] == "ok" else frame["error"]["code"])
        assert answers == ["ok", "ok", "ok", "ok", "rate_limited"]
