"""An application's empty message reaches the client (realtime.daphne.transport.send_websocket_message),
and the daphne patches refuse a daphne they were not checked against."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import daphne
import pytest
from daphne.ws_protocol import WebSocketProtocol
from websockets.asyncio.client import connect

from realtime.daphne.patches import KNOWN_DAPHNE_VERSIONS, require_known_daphne
from realtime.daphne.transport import send_websocket_message
from tests.realtime.nodes import echo_node


def _open_socket() -> Any:
    """Enough of daphne's protocol for its reply handling: its state, and the sends it makes."""
    protocol = SimpleNamespace(
        STATE_CONNECTING=WebSocketProtocol.STATE_CONNECTING,
        STATE_OPEN=WebSocketProtocol.STATE_OPEN,
        state=WebSocketProtocol.STATE_OPEN,
        sent=[],
    )
    protocol.serverSend = lambda content, binary: protocol.sent.append((content, binary))
    return protocol


@pytest.mark.parametrize(("message", "sent"), [({"text": ""}, ("", False)), ({"bytes": b""}, (b"", True))])
def test_an_empty_message_is_sent_where_daphne_drops_it(message: dict[str, Any], sent: tuple[Any, bool]) -> None:
    reply = {"type": "websocket.send", **message}
    stock = _open_socket()
    WebSocketProtocol.handle_reply(stock, reply)  # daphne tests text/bytes for truth
    patched = _open_socket()

    send_websocket_message(patched, reply)

    assert (stock.sent, patched.sent) == ([], [sent])


@pytest.mark.parametrize(
    ("message", "sent"),
    [
        ({"text": "hello"}, ("hello", False)),
        ({"bytes": b"\x00\x01"}, (b"\x00\x01", True)),
        ({"text": "hello", "bytes": None}, ("hello", False)),  # ASGI allows both keys, one of them None
        ({"text": None, "bytes": b""}, (b"", True)),
    ],
)
def test_other_messages_are_sent_as_daphne_sends_them(message: dict[str, Any], sent: tuple[Any, bool]) -> None:
    protocol = _open_socket()
    send_websocket_message(protocol, {"type": "websocket.send", **message})
    assert protocol.sent == [sent]


def test_a_message_with_both_text_and_bytes_or_before_accept_is_refused() -> None:
    protocol = _open_socket()
    with pytest.raises(ValueError, match="contains both bytes and text keys"):
        send_websocket_message(protocol, {"type": "websocket.send", "text": "", "bytes": b""})
    protocol.state = WebSocketProtocol.STATE_CONNECTING
    with pytest.raises(ValueError, match="Socket has not been accepted"):
        send_websocket_message(protocol, {"type": "websocket.send", "text": "early"})
    assert protocol.sent == []


def test_the_patches_refuse_a_daphne_they_were_not_checked_against() -> None:
    assert daphne.__version__ in KNOWN_DAPHNE_VERSIONS  # the pinned daphne: upgrading it means reading it again
    require_known_daphne(daphne.__version__)
    with pytest.raises(RuntimeError, match=r"knows daphne 4\.2\.3, not 4\.3\.0: read the new daphne"):
        require_known_daphne("4.3.0")


async def test_a_real_node_echoes_empty_text_and_binary_messages(tmp_path: Path) -> None:
    with echo_node(tmp_path) as node:
        async with connect(node.echo_url) as socket:
            for message in ("", b"", "after the empty ones", b"\xff"):
                await socket.send(message)
                assert await asyncio.wait_for(socket.recv(), timeout=5) == message


def test_a_send_to_a_closing_socket_is_dropped_not_raised() -> None:
    closing = _open_socket()
    closing.state = WebSocketProtocol.STATE_CLOSING  # closed by the server a moment ago
    send_websocket_message(closing, {"type": "websocket.send", "text": "late"})
    assert closing.sent == []
