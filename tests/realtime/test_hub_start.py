"""A node whose channel layer is away when it starts: sockets are told to come back (1013), /readyz
says 503, and both recover on their own once Redis answers (issue 16, item 2)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.node import hub as hub_module
from tests.personas import WeddingParty
from tests.realtime.conftest import bearer, communicator
from tests.realtime.nodes import Node, node_environment
from tests.realtime.test_nodes import protocols
from tests.servers import RedisServer, free_port, redis_server
from wedsync.settings import channel_layer_config

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]


async def _connect(member) -> tuple[WebsocketCommunicator, dict]:
    comm = communicator(subprotocols=["wedsync.v1", f"bearer.{await bearer(member)}"])
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm, await comm.receive_json_from(timeout=10)


async def test_sockets_are_told_to_come_back_until_the_layer_answers(party: WeddingParty) -> None:
    redis = RedisServer(port=free_port())  # not started yet: the layer's Redis is away
    layer = {"default": channel_layer_config(redis_url=redis.url, kind="pubsub")}
    with override_settings(CHANNEL_LAYERS=layer):
        channel_layers.backends.clear()
        try:
            first, frame = await _connect(party.priya)
            assert frame == {
                "op": "error",
                "code": "unavailable",
                "message": "This node is not ready: try again later.",
                "retry_after": 2.0,
            }
            assert await first.receive_output(timeout=3) == {"type": "websocket.close", "code": 1013}
            second, frame = await _connect(party.priya)  # answered at once while the start retries
            assert frame["code"] == "unavailable"
            assert await second.receive_output(timeout=3) == {"type": "websocket.close", "code": 1013}
            redis.start()
            async with asyncio.timeout(15):  # the start's backoff is at most 5 s
                while True:
                    comm, frame = await _connect(party.priya)
                    if frame["op"] == "welcome":
                        break
                    await comm.receive_output(timeout=3)
                    await asyncio.sleep(0.2)
            await comm.send_json_to({"op": "subscribe", "ref": "s", "topic": f"wedding:{party.wedding.pk}"})
            reply = await comm.receive_json_from(timeout=5)
            assert (reply["op"], reply["status"]) == ("reply", "ok"), reply
            await comm.disconnect()
        finally:
            hub = hub_module._hubs.get(asyncio.get_running_loop())
            if hub is not None:
                await hub.stop()
            redis.remove()
            channel_layers.backends.clear()


def _readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.requires_redis
async def test_a_node_started_without_redis_is_not_ready_until_it_answers(party: WeddingParty, tmp_path: Path) -> None:
    redis = RedisServer(port=free_port())
    node = Node(name="n1", port=free_port(), log_path=tmp_path / "n1.log")
    node.start(node_environment(redis_url=redis.url))
    token = await bearer(party.priya)
    try:
        # The hub starts with the server, not with a first socket: its failed starts are logged
        # before anything connected.
        async with asyncio.timeout(10):
            while "hub.start_failed" not in node.log():  # noqa: ASYNC110  another process
                await asyncio.sleep(0.1)
        status, body = await asyncio.to_thread(_readyz, node.port)
        assert status == 503 and "socket_hub" in body["down"] and "channel_layer" in body["down"], body
        async with connect(node.url, subprotocols=protocols(token)) as ws:
            frame = json.loads(await ws.recv())
            assert (frame["op"], frame["code"]) == ("error", "unavailable")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        redis.start()
        async with asyncio.timeout(20):
            while (await asyncio.to_thread(_readyz, node.port))[0] != 200:  # noqa: ASYNC110  another process
                await asyncio.sleep(0.3)
        assert (await asyncio.to_thread(_readyz, node.port))[1]["checks"]["socket_hub"] == "ok"
        async with connect(node.url, subprotocols=protocols(token)) as ws:
            assert json.loads(await ws.recv())["op"] == "welcome"
            await ws.send(json.dumps({"op": "subscribe", "ref": "s", "topic": f"wedding:{party.wedding.pk}"}))
            reply = json.loads(await ws.recv())
            assert (reply["op"], reply["status"]) == ("reply", "ok"), reply
        assert "hub.start_failed" in node.log() and "hub.started" in node.log()
    finally:
        node.stop()
        redis.remove()


@pytest.mark.requires_redis
async def test_a_node_is_ready_before_any_socket_connects(tmp_path: Path) -> None:
    with redis_server() as redis:
        node = Node(name="n1", port=free_port(), log_path=tmp_path / "n1.log")
        node.start(node_environment(redis_url=redis.url))
        try:
            async with asyncio.timeout(10):
                while (await asyncio.to_thread(_readyz, node.port))[0] != 200:  # noqa: ASYNC110  another process
                    await asyncio.sleep(0.2)
        finally:
            node.stop()
