"""A socket's inbound frames are bounded on a real daphne node (issue 16, item 1): while its consumer
is busy (here: a paced replay to a client that does not read), the node stops reading the socket
instead of queueing whatever the client sends; and a flood already read in one go is closed 1008."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime.services.events import member_event_publish
from tests.personas import WeddingParty
from tests.realtime.conftest import bearer
from tests.realtime.nodes import cluster
from tests.realtime.test_nodes import protocols

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

EVENTS = 300


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _publish_many(party: WeddingParty) -> None:
    for i in range(EVENTS):
        member_event_publish(member=party.priya, type_name="chat.message", data={"text": f"{i:04d} " + "x" * 3000})


async def test_a_busy_socket_stops_being_read_instead_of_queueing(party: WeddingParty, tmp_path: Path) -> None:
    await database_sync_to_async(_publish_many)(party)
    with cluster(tmp_path, count=1, extra_env={"REALTIME_OUTBOX_MAX_FRAMES": "20"}) as nodes:
        (node,) = nodes.nodes
        assert node.process is not None
        topic = f"wedding:{party.wedding.pk}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel absorbs little of the replay
        sock.connect(("127.0.0.1", node.port))
        ws = await connect(node.url, sock=sock, subprotocols=protocols(await bearer(party.gil)), max_queue=1)
        try:
            assert json.loads(await ws.recv())["op"] == "welcome"
            await ws.send(json.dumps({"op": "subscribe", "ref": "s", "topic": topic, "since": 0}))
            await asyncio.sleep(1)  # the replay stalls on the client that does not read
            rss_before = _rss_kb(node.process.pid)
            junk = json.dumps({"op": "heartbeat", "ref": "h", "pad": "y" * 32_000})

            async def flood() -> None:
                for _ in range(640):  # 20 MB
                    await ws.send(junk)

            with pytest.raises(TimeoutError):  # the node stopped reading: the client's sends back up
                await asyncio.wait_for(flood(), timeout=10)
            grown_mb = (_rss_kb(node.process.pid) - rss_before) / 1024
            assert grown_mb < 10, f"the node grew {grown_mb:.1f} MB while a client it could not serve sent 20 MB"
            assert '"event": "inbox.paused"' in node.log()
            # The client reads again: the reply, then the replay in order, until the junk it sent is
            # read too and refused as protocol violations (4400). How much of the replay gets out
            # before that close depends on the client's pace; none of it is out of order.
            frames = await _frames_until_closed(ws, within=30)
            assert next(frame for frame in frames if frame.get("ref") == "s")["status"] == "ok"
            seqs = [frame["seq"] for frame in frames if frame["op"] == "event"]
            assert seqs and seqs == list(range(1, len(seqs) + 1))
            assert ws.close_code == 4400
        finally:
            await ws.close()


async def test_a_flood_read_in_one_go_is_closed_1008(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path, count=1) as nodes:
        (node,) = nodes.nodes
        async with connect(node.url, subprotocols=protocols(await bearer(party.gil))) as ws:
            assert json.loads(await ws.recv())["op"] == "welcome"
            # Thousands of small frames written at once: one network read holds more than the hard bound.
            for _ in range(5000):
                ws.protocol.send_text(b'{"op":"heartbeat"}')
            ws.send_data()
            frames = await _frames_until_closed(ws)
            errors = [frame for frame in frames if frame.get("op") == "error"]
            assert [error["code"] for error in errors] == ["rate_limited"], frames[-3:]
            assert ws.close_code == 1008
        assert '"event": "inbox.overflow"' in node.log()


async def _frames_until_closed(ws: ClientConnection, within: float = 10) -> list[dict]:
    frames: list[dict] = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), within)))
    except ConnectionClosed:
        return frames
