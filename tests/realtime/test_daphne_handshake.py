"""An open socket keeps nothing of its opening handshake but the path daphne logs."""

from __future__ import annotations

import collections
from types import SimpleNamespace

import pytest
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.task import Clock

from realtime.daphne.memory import LazySendQueue, _shed_handshake


def test_an_open_socket_sheds_its_handshake_headers_for_every_holder_of_the_scope() -> None:
    headers = [(b"host", b"127.0.0.1"), (b"sec-websocket-protocol", b"wedsync.v1, bearer.secret-token")]
    scope = {"type": "websocket", "path": "/ws/v1/", "headers": headers}
    routed_scope = dict(scope, url_route={})  # channels' URLRouter holds a copy sharing the list
    request = ConnectionRequest(
        peer="tcp:127.0.0.1:5000",
        headers={"host": "127.0.0.1", "sec-websocket-protocol": "wedsync.v1, bearer.secret-token"},
        host="127.0.0.1",
        path="/ws/v1/",
        params={},
        version=13,
        origin=None,
        protocols=["wedsync.v1", "bearer.secret-token"],
        extensions=[],
    )
    protocol = SimpleNamespace(
        request=request,
        clean_headers=headers,
        http_request_data=b"GET /ws/v1/ HTTP/1.1\r\nSec-WebSocket-Protocol: wedsync.v1, bearer.secret-token\r\n\r\n",
        http_headers={"sec-websocket-protocol": "wedsync.v1, bearer.secret-token"},
        http_status_line="GET /ws/v1/?device=phone HTTP/1.1",
        http_request_uri="/ws/v1/?device=phone",
        http_request_params={"device": ["phone"]},
        websocket_protocols=["wedsync.v1", "bearer.secret-token"],
        http_response_data="HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x3JJHMbDL1EzLkh9GBhXDw==\r\n\r\n",
        _wskey="dGhlIHNhbXBsZSBub25jZQ==",
        _raw_query_string=b"ticket=secret-ticket",
        send_queue=collections.deque(),
    )

    _shed_handshake(protocol)

    assert protocol.request.path == "/ws/v1/"  # what daphne's access log still reads
    assert not hasattr(protocol.request, "headers")
    assert protocol.http_request_data == b"" and protocol.http_headers == {}
    assert (protocol.http_status_line, protocol.http_request_uri, protocol.http_request_params) == ("", "", {})
    assert protocol.websocket_protocols == []
    assert (protocol.http_response_data, protocol._wskey, protocol._raw_query_string) == ("", "", b"")
    assert isinstance(protocol.send_queue, LazySendQueue) and len(protocol.send_queue) == 0
    assert scope["headers"] == [] and routed_scope["headers"] == []
    assert b"secret-token" not in repr((protocol.__dict__, scope, routed_scope)).encode()
    assert b"secret-ticket" not in repr(protocol.__dict__).encode()


def test_the_lazy_send_queue_keeps_autobahns_order_once_a_send_needs_it() -> None:
    queue = LazySendQueue()
    assert not queue and len(queue) == 0
    with pytest.raises(IndexError):
        queue.popleft()

    queue.append((b"first", True))
    queue.append((b"second", False))

    assert len(queue) == 2
    assert queue.popleft() == (b"first", True)
    assert queue.popleft() == (b"second", False)
    assert not queue


def test_autobahns_synchronous_sends_go_out_in_order_through_the_lazy_queue(txaio_clock: Clock) -> None:
    # autobahn's own send path (sendData -> _trigger -> _send, re-entering the reactor between
    # queued writes), run on a protocol whose queue was shed at open.
    import txaio
    from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol

    written: list[bytes] = []
    protocol = SimpleNamespace(
        state=WebSocketProtocol.STATE_OPEN,
        transport=SimpleNamespace(write=written.append),
        trafficStats=TrafficStats(),
        logOctets=False,
        log=txaio.make_logger(),  # type: ignore[attr-defined]
        peer="tcp:127.0.0.1:5000",
        triggered=False,
        send_queue=collections.deque(),
    )
    for name in ("sendData", "_trigger", "_send"):
        setattr(protocol, name, getattr(WebSocketProtocol, name).__get__(protocol))
    _shed_handshake(protocol)
    assert isinstance(protocol.send_queue, LazySendQueue)
    protocol.sendData(b"one", sync=True)  # written now; the next queued write waits a turn
    protocol.sendData(b"two", sync=True)
    protocol.sendData(b"three")  # queued behind them, as autobahn keeps the order
    assert written == [b"one"] and len(protocol.send_queue) == 2
    txaio_clock.advance(1)
    assert written == [b"one", b"two"]
    txaio_clock.advance(1)
    txaio_clock.advance(1)
    assert written == [b"one", b"two", b"three"] and not protocol.send_queue

    protocol.sendData(b"four")  # nothing queued: straight to the transport
    assert written[-1] == b"four"
