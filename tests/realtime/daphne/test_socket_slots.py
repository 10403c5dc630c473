"""An open socket's protocol keeps its per-connection state in slots, not in its instance dict
(realtime.daphne.memory.socket_slots, decision 0048): run on daphne's and autobahn's real protocol
code, with a real handshake, a message and a ping over an in-memory transport."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from realtime.daphne import patches
from realtime.daphne.memory import SOCKET_STATE_ATTRIBUTES, socket_slots

CLIENT = IPv4Address("TCP", "127.0.0.1", 50000)


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (clients must mask, RFC 6455 section 5.3), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def _open_socket(clock: Clock, received: list[dict[str, Any]]) -> tuple[Any, StringTransport]:
    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        received.append(await receive())  # websocket.connect
        await send({"type": "websocket.accept"})
        while received[-1]["type"] != "websocket.disconnect":
            received.append(await receive())

    server = Server(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"])
    server.connections = {}
    factory = patches.websocket_factory(WebSocketFactory, WebSocketProtocol, max_frame=64 * 1024)(
        server, server="Daphne", reactor=clock
    )
    protocol = factory.buildProtocol(CLIENT)
    transport = StringTransport(peerAddress=CLIENT, hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
    protocol.makeConnection(transport)
    protocol._raw_query_string = b""  # what daphne's HTTP side sets when it hands the socket over
    key = base64.b64encode(os.urandom(16))
    protocol.dataReceived(
        b"GET /ws/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for _ in range(50):
        if protocol.state == AutobahnProtocol.STATE_OPEN:
            break
        await asyncio.sleep(0.01)
    return protocol, transport


async def test_an_open_socket_keeps_its_state_in_slots_and_works_as_before(txaio_clock: Clock) -> None:
    received: list[dict[str, Any]] = []
    protocol, transport = await _open_socket(txaio_clock, received)
    assert protocol.state == AutobahnProtocol.STATE_OPEN
    assert transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    transport.clear()

    protocol.dataReceived(_masked_frame(0x1, b'{"op":"ping"}'))
    protocol.dataReceived(_masked_frame(0x9, b"alive?"))
    for _ in range(50):
        if len(received) > 1:
            break
        await asyncio.sleep(0.01)

    assert received[-1] == {"type": "websocket.receive", "text": '{"op":"ping"}'}
    assert transport.value() == bytes([0x8A, 6]) + b"alive?"  # the pong, unmasked from the server
    assert protocol.wedsync_heard > 0 and protocol.frame_length == len(b'{"op":"ping"}')
    # Everything left in the dict is a name some class in the MRO defines; the rest is in slots.
    defined = {name for klass in type(protocol).__mro__ for name in vars(klass)}
    assert set(vars(protocol)) <= defined, sorted(set(vars(protocol)) - defined)
    assert len(vars(protocol)) <= 8
    protocol.connectionLost(Failure(ConnectionDone()))
    for _ in range(50):
        if received[-1]["type"] == "websocket.disconnect":
            break
        await asyncio.sleep(0.01)
    assert received[-1]["type"] == "websocket.disconnect"


def test_the_slots_are_autobahns_options_and_the_state_no_class_defines() -> None:
    class Base:
        CONFIG_ATTRS = ("logFrames", "state")
        state = 0  # a class default: a slot would hide it

    class Protocol(Base):
        server = None

    slots = socket_slots(Protocol)

    assert slots[0] == "logFrames" and slots.count("logFrames") == 1
    assert "state" not in slots and "server" not in slots
    assert set(slots) == {"logFrames"} | set(SOCKET_STATE_ATTRIBUTES) - {"state", "server"}
