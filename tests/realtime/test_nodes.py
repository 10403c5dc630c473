"""Two daphne processes on one Redis: the guarantees of PROTOCOL.md across nodes and failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import connection, transaction
from django.test import override_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from realtime.client import RealtimeClient
from realtime.names import wedding_group
from realtime.services.events import member_event_publish
from tests.personas import WeddingParty
from tests.realtime.conftest import bearer
from tests.realtime.nodes import Node, cluster
from wedsync.models import AuditLog
from wedsync.settings import channel_layer_config

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]


def protocols(token: str) -> list[Subprotocol]:
    return [Subprotocol("wedsync.v1"), Subprotocol(f"bearer.{token}")]


async def client_for(member, urls, **kwargs) -> RealtimeClient:
    token = await bearer(member)
    client = RealtimeClient(urls, token=token, **kwargs)
    await client.start()
    return client


def welcome(client: RealtimeClient) -> dict:
    assert client.welcome is not None
    return client.welcome


async def drain(client: RealtimeClient, count: int, within: float = 20) -> list[dict]:
    events: list[dict] = []
    async with asyncio.timeout(within):
        while len(events) < count:
            frame = await client.next_event()
            if frame.get("op") == "event":
                events.append(frame)
    return events


async def test_events_cross_nodes_to_their_audience(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        planner = await client_for(party.priya, a.url)
        guest = await client_for(party.gil, b.url)
        caterer = await client_for(party.carmen, b.url)
        topic = f"wedding:{party.wedding.pk}"
        try:
            assert welcome(planner)["node"] == "n1" and welcome(guest)["node"] == "n2"
            for client in (planner, guest, caterer):
                await client.subscribe(topic)
            await caterer.publish(topic, "vendor.status", {"activity": "setup"})
            assert (await planner.next_event(5))["type"] == "vendor.status"
            assert (await caterer.next_event(5))["type"] == "vendor.status"
            await planner.publish(topic, "chat.message", {"text": "Doors open at four"})
            for client in (planner, guest, caterer):
                event = await client.next_event(5)
                assert (event["type"], event["seq"]) == ("chat.message", 2)
            with pytest.raises(TimeoutError):
                await guest.next_event(0.5)  # the vendor.status was never for guests
        finally:
            for client in (planner, guest, caterer):
                await client.close()


def _publish_burst_in_one_transaction(*, member, count: int) -> None:
    # Every fan-out fires back to back when the transaction commits: far faster than a node reads.
    with transaction.atomic():
        for i in range(count):
            member_event_publish(member=member, type_name="chat.message", data={"text": f"burst {i}"})


async def every_event_once_in_order(readers: list[RealtimeClient], *, count: int) -> None:
    """Each reader gets seqs 1..count, once each, in order, and nothing after them."""
    for reader in readers:
        seqs = [event["seq"] for event in await drain(reader, count)]
        assert seqs == list(range(1, count + 1))
        with pytest.raises(TimeoutError):
            await reader.next_event(0.3)


@contextlib.contextmanager
def paused(*paused_nodes: Node) -> Iterator[None]:
    """The nodes stopped (SIGSTOP) for the block: they read nothing from Redis or their sockets."""
    for node in paused_nodes:
        node.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for node in paused_nodes:
            node.signal(signal.SIGCONT)


async def test_messages_the_core_layer_drops_are_repaired_from_the_log(
    party: WeddingParty, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A channel capacity of 1 makes channels-redis's core layer drop most of a burst, silently.
    with cluster(tmp_path, extra_env={"REALTIME_CHANNEL_LAYER": "core", "REALTIME_LAYER_CAPACITY": "1"}) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        readers = [
            await client_for(member, [a.url, b.url][i % 2])
            for i, member in enumerate((party.gil, party.ana, party.paula))
        ]
        layer = {"default": channel_layer_config(redis_url=nodes.redis.url, kind="core", capacity=1)}
        try:
            for client in readers:
                await client.subscribe(topic)
            # Both nodes are paused while the burst is sent, so their channels fill up and
            # channels-redis must drop: how fast a node happens to read cannot hide the drops.
            with (
                paused(a, b),
                override_settings(CHANNEL_LAYERS=layer),
                caplog.at_level(logging.INFO, logger="channels_redis"),
            ):
                channel_layers.backends.clear()
                await database_sync_to_async(_publish_burst_in_one_transaction)(member=party.priya, count=200)
            # channels-redis says so (at INFO, to the sender only) when it drops a group message.
            assert any("over capacity" in record.getMessage() for record in caplog.records)
            channel_layers.backends.clear()
            await every_event_once_in_order(readers, count=200)
        finally:
            for client in readers:
                await client.close()
        assert "feed.gap" in a.log() + b.log()  # and the nodes noticed the gaps and read them back


async def test_events_published_while_a_node_is_off_pubsub_are_repaired_and_it_resubscribes(
    party: WeddingParty, tmp_path: Path
) -> None:
    # Redis Pub/Sub keeps nothing for a subscriber that is not connected. The nodes' subscriber
    # connections are cut while the nodes are paused, so every event of the burst is published to
    # nobody: the nodes must read all of them back from the log, and subscribe again by themselves.
    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        readers = [await client_for(member, url) for member, url in ((party.gil, a.url), (party.ana, b.url))]
        layer = {"default": channel_layer_config(redis_url=nodes.redis.url, kind="pubsub")}
        admin = redis.Redis.from_url(nodes.redis.url)
        try:
            for client in readers:
                await client.subscribe(topic)
            with paused(a, b), override_settings(CHANNEL_LAYERS=layer):
                assert admin.client_kill_filter(_type="pubsub") >= 2  # one subscriber connection per node
                channel_layers.backends.clear()
                await database_sync_to_async(_publish_burst_in_one_transaction)(member=party.priya, count=50)
                assert _subscribers(admin, layer, party) == 0  # published to nobody
            await every_event_once_in_order(readers, count=50)
            # Live delivery again, without a reconnect of the sockets: the nodes subscribed again.
            async with asyncio.timeout(20):
                while _subscribers(admin, layer, party) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            with override_settings(CHANNEL_LAYERS=layer):
                channel_layers.backends.clear()
                await database_sync_to_async(member_event_publish)(
                    member=party.priya, type_name="chat.message", data={"text": "after"}
                )
            for reader in readers:
                assert (await reader.next_event(5))["seq"] == 51
                assert reader.reconnects == 0
        finally:
            channel_layers.backends.clear()
            admin.close()
            for client in readers:
                await client.close()
        assert "feed.gap" in a.log() and "feed.gap" in b.log()


def _subscribers(admin: redis.Redis, layer: dict[str, dict[str, Any]], party: WeddingParty) -> int:
    """How many connections (one per node) are subscribed to the wedding's Pub/Sub channel."""
    channel = f"{layer['default']['CONFIG']['prefix']}__group__{wedding_group(party.wedding.pk)}"
    ((_name, count),) = admin.pubsub_numsub(channel)
    return int(count)


async def test_a_feed_whose_inbox_is_full_drops_and_reads_the_rest_from_the_log(
    party: WeddingParty, tmp_path: Path
) -> None:
    # An inbox of one: a burst the paused nodes read all at once overflows it at their first turn.
    with cluster(tmp_path, extra_env={"REALTIME_FEED_INBOX_MAX": "1"}) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        readers = [await client_for(member, url) for member, url in ((party.gil, a.url), (party.ana, b.url))]
        layer = {"default": channel_layer_config(redis_url=nodes.redis.url, kind="pubsub")}
        try:
            for client in readers:
                await client.subscribe(topic)
            with paused(a, b), override_settings(CHANNEL_LAYERS=layer):
                channel_layers.backends.clear()
                await database_sync_to_async(_publish_burst_in_one_transaction)(member=party.priya, count=200)
            await every_event_once_in_order(readers, count=200)
        finally:
            channel_layers.backends.clear()
            for client in readers:
                await client.close()
        logs = a.log() + b.log()
        assert "feed.inbox_full" in logs and "feed.gap" in logs


async def test_a_node_killed_mid_burst_loses_and_doubles_nothing(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        # Readers start on node A and fail over to B; the writer stays on B.
        readers = [await client_for(member, [a.url, b.url]) for member in (party.gil, party.ana)]
        writer = await client_for(party.priya, b.url)
        try:
            for client in [*readers, writer]:
                await client.subscribe(topic)
            for i in range(300):
                await writer.publish(topic, "chat.message", {"text": f"m{i}"})
                if i == 100:
                    a.signal(signal.SIGKILL)
            for reader in readers:
                seqs = [event["seq"] for event in await drain(reader, 300, within=30)]
                assert seqs == list(range(1, 301))
                assert reader.reconnects >= 1 and welcome(reader)["node"] == "n2"
        finally:
            for client in [*readers, writer]:
                await client.close()


async def test_sigterm_drains_sockets_with_1001(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        client = await client_for(party.gil, [a.url, b.url])
        try:
            await client.subscribe(f"wedding:{party.wedding.pk}")
            a.signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                while welcome(client)["node"] != "n2" or not client._connected.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert 1001 in client.close_codes
            assert a.process is not None and a.process.wait(timeout=15) == 0  # it stopped by itself, cleanly
            assert "drain.done" in a.log()
        finally:
            await client.close()


async def event_seqs_until_closed(ws: ClientConnection) -> list[int]:
    seqs: list[int] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(20):
            async for raw in ws:
                frame = json.loads(raw)
                if frame["op"] == "event":
                    seqs.append(frame["seq"])
    return seqs


async def test_a_slow_reader_is_cut_off_with_4008_and_completes_after_resume(
    party: WeddingParty, tmp_path: Path
) -> None:
    with cluster(tmp_path, count=1, extra_env={"REALTIME_OUTBOX_MAX_FRAMES": "50"}) as nodes:
        (a,) = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        token = await bearer(party.gil)
        writer = await client_for(party.priya, a.url)
        await writer.subscribe(topic)
        # A reader that stops reading: websockets stops pulling from the socket once one frame waits.
        # A small receive buffer keeps the kernel from absorbing the whole burst on loopback.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", a.port))
        slow = await connect(
            a.url,
            sock=sock,
            subprotocols=protocols(token),
            max_queue=1,
            max_size=None,
        )
        try:
            assert json.loads(await slow.recv())["op"] == "welcome"
            await slow.send(json.dumps({"op": "subscribe", "ref": "s", "topic": topic, "since": 0}))
            assert json.loads(await slow.recv())["op"] == "reply"
            for i in range(400):
                await writer.publish(topic, "chat.message", {"text": f"{i:04d} " + "x" * 3000})
            received = await event_seqs_until_closed(slow)
            assert slow.close_code == 4008
            assert received == list(range(1, len(received) + 1)) and len(received) < 400
            resumed = await client_for(party.gil, a.url)
            await resumed.subscribe(topic, since=received[-1] if received else 0)
            rest = [event["seq"] for event in await drain(resumed, 400 - len(received))]
            assert received + rest == list(range(1, 401))
            await resumed.close()
        finally:
            await slow.close()
            await writer.close()


async def test_an_oversized_frame_gets_too_large_and_1009_from_daphne(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path, count=1) as nodes:
        (a,) = nodes.nodes
        token = await bearer(party.gil)
        async with connect(a.url, subprotocols=protocols(token), max_size=None) as ws:
            assert json.loads(await ws.recv())["op"] == "welcome"
            await ws.send(json.dumps({"op": "heartbeat", "ref": "x" * (1024 * 1024)}))
            error = json.loads(await ws.recv())
            assert (error["op"], error["code"]) == ("error", "too_large")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009


async def test_redis_restart_under_traffic_loses_nothing(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        reader = await client_for(party.gil, b.url)
        writer = await client_for(party.priya, a.url)
        try:
            for client in (reader, writer):
                await client.subscribe(topic)
            for i in range(60):
                await writer.publish(topic, "chat.message", {"text": f"m{i}"})
                if i == 20:
                    nodes.redis.stop()
                if i == 40:
                    await database_sync_to_async(nodes.redis.start)()
            seqs = [event["seq"] for event in await drain(reader, 60, within=30)]
            assert seqs == list(range(1, 61))
        finally:
            await reader.close()
            await writer.close()


async def test_rate_and_device_limits_are_shared_across_nodes(party: WeddingParty, tmp_path: Path) -> None:
    from realtime.client import ClientError

    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        phone, laptop = await client_for(party.gil, b.url), await client_for(party.gil, a.url)
        try:
            for client in (phone, laptop):
                await client.subscribe(topic)
            for i in range(5):  # a guest's budget is 5 a minute, whichever node counts it
                await (phone if i % 2 else laptop).publish(topic, "chat.message", {"text": f"m{i}"})
            with pytest.raises(ClientError) as refused:
                await phone.publish(topic, "chat.message", {"text": "too many"})
            assert refused.value.code == "rate_limited" and refused.value.data["retry_after"] > 0
            # A third device for a guest (limit 2) on node A: the oldest, the phone on node B, closes.
            tablet = await client_for(party.gil, a.url, reconnect=False)
            async with asyncio.timeout(10):
                while 4029 not in phone.close_codes:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await tablet.close()
        finally:
            await phone.close()
            await laptop.close()


def _records_for(party: WeddingParty) -> tuple[int, int]:
    from tests.factories import TaskFactory, TimelineItemFactory

    item = TimelineItemFactory(wedding=party.wedding, title="First look")
    item.assigned_vendors.set([party.paula])
    return item.pk, TaskFactory(wedding=party.wedding, assignee=party.flora).pk


async def test_the_audience_table_row_by_row_across_nodes(party: WeddingParty, tmp_path: Path) -> None:
    """Publishes, and records changed through sync (server-sent record.* events), sent on node A
    reach exactly their audience among the sockets on node B."""
    item_id, task_id = await database_sync_to_async(_records_for)(party)
    names = ("ana", "priya", "victor", "paula", "carmen", "flora", "olu", "gil")
    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        receivers = {name: await client_for(getattr(party, name), b.url) for name in names}
        publishers = {
            name: await client_for(getattr(party, name), a.url) for name in ("gil", "priya", "carmen", "victor")
        }
        everyone = set(names)
        # Without ceremony details: a timeline change's other part, stored before the author's.
        earlier = {"carmen", "flora", "gil"}
        # (sender, op, its fields, the event type it sends, who receives it, who gets the seq before)
        rows = [
            ("gil", "publish", {"type": "chat.message", "data": {"text": "hello"}}, "chat.message", everyone, set()),
            (
                "gil",
                "sync",
                {"record": "rsvp", "changes": {"status": "attending"}},
                "record.created",
                {"ana", "priya", "gil"},
                set(),
            ),
            (
                "priya",
                "sync",
                {
                    "record": "timeline_item",
                    "id": item_id,
                    "base_version": 1,
                    "changes": {"title": "First look, garden"},
                },
                "record.updated",
                everyone,
                earlier,
            ),
            (
                "carmen",
                "publish",
                {"type": "vendor.status", "data": {"activity": "setup"}},
                "vendor.status",
                {"ana", "priya", "carmen"},
                set(),
            ),
            (
                "priya",
                "sync",
                {"record": "task", "id": task_id, "base_version": 1, "changes": {"status": "done"}},
                "record.updated",
                {"ana", "priya", "flora"},
                set(),
            ),
            (
                "victor",
                "publish",
                {"type": "emergency.alert", "data": {"message": "the marquee is flooding"}},
                "emergency.alert",
                everyone,
                set(),
            ),
        ]
        try:
            for client in [*receivers.values(), *publishers.values()]:
                await client.subscribe(topic)
            for n, (sender, op, fields, event_type, audience, before) in enumerate(rows):
                if op == "sync":
                    published = await publishers[sender].request("sync", topic=topic, op_id=f"row-{n}", **fields)
                else:
                    published = await publishers[sender].publish(topic, fields["type"], fields["data"])
                got = set()
                for name, client in receivers.items():
                    with contextlib.suppress(TimeoutError):
                        event = await client.next_event(2.0 if name in audience else 0.3)
                        seq = published["seq"] - 1 if name in before else published["seq"]
                        assert (event["seq"], event["type"]) == (seq, event_type), (name, event_type)
                        got.add(name)
                assert got == audience, event_type
        finally:
            for client in [*receivers.values(), *publishers.values()]:
                await client.close()


async def test_a_handshake_slower_than_daphnes_five_seconds_is_finished_not_dropped(
    party: WeddingParty, tmp_path: Path
) -> None:
    """REALTIME_HANDSHAKE_TIMEOUT (15 s) over daphne's default 5: a handshake queued behind a
    reconnect storm is answered rather than dropped and tried again. Here its audit row waits
    for a lock on the audit table for six seconds (a socket is accepted once its row is written)."""
    with cluster(tmp_path, count=1) as nodes:
        (a,) = nodes.nodes
        token = await bearer(party.gil)
        db = connection.settings_dict
        dsn = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname={db['NAME']}"
        lock: psycopg.Connection[tuple[object, ...]] = await asyncio.to_thread(psycopg.connect, dsn)

        async def welcome() -> dict:
            async with connect(a.url, subprotocols=protocols(token), open_timeout=20) as ws:
                return json.loads(await ws.recv())

        try:
            await asyncio.to_thread(lock.execute, f"LOCK TABLE {AuditLog._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
            connecting = asyncio.create_task(welcome())
            await asyncio.sleep(6)
            assert not connecting.done()  # still waiting for its audit row, not dropped
        finally:
            await asyncio.to_thread(lock.rollback)
            await asyncio.to_thread(lock.close)
        assert (await asyncio.wait_for(connecting, 10))["op"] == "welcome"
