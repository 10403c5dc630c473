"""One socket's transport seen from its ASGI ``send``: direct frame writes, write back-pressure, liveness.

daphne hands the application ``partial(Server.handle_reply, protocol)``; these helpers find the
protocol behind it, and return a harmless default when the socket is not served by daphne (tests).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable
from typing import Any

import structlog

logger = structlog.get_logger(__name__)


def send_websocket_message(protocol: Any, message: dict[str, Any]) -> None:
    """daphne 4.2.3's ``websocket.send`` handling (``WebSocketProtocol.handle_reply``), except that
    an empty ``text`` or ``bytes`` is sent: daphne tests them for truth and silently drops ``""``
    and ``b""``. As ASGI says, the one of the two that is not None is sent. A send to a socket that
    is closing or closed (the client left, the server closed it a moment ago) is dropped, as the
    direct writes drop it, rather than raised into the application as autobahn's ``Disconnected``."""
    if protocol.state == protocol.STATE_CONNECTING:
        raise ValueError("Socket has not been accepted, so cannot send over it")
    if protocol.state != protocol.STATE_OPEN:
        return
    data, text = message.get("bytes"), message.get("text")
    if data is not None and text is not None:
        raise ValueError(f"Got invalid WebSocket reply message on {message!r} - contains both bytes and text keys")
    if data is not None:
        protocol.serverSend(data, True)
    elif text is not None:
        protocol.serverSend(text, False)


class WriteGate:
    """A Twisted push producer: paused while the socket's send buffer is over Twisted's 64 KiB mark.

    No event per socket: a future exists only while someone waits for a paused socket.
    """

    __slots__ = ("_paused", "_waiter")

    def __init__(self) -> None:
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # Twisted calls these from the reactor, which under daphne is the asyncio loop's thread.
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            self._waiter = None

    def stopProducing(self) -> None:
        self.resumeProducing()

    @property
    def writable(self) -> bool:
        return not self._paused

    async def wait_writable(self) -> None:
        while self._paused:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)


_AUTOBAHN_STATE_OPEN = 3  # autobahn.websocket.protocol.WebSocketProtocol.STATE_OPEN


class FrameWriter:
    """Writes ready-made frames straight to one socket, skipping the ASGI send, daphne's reply
    handling and autobahn's per-call framing, the fan-out's largest cost per delivery (decision 0005).

    A frame goes to the kernel at once when Twisted holds nothing queued for the socket, which
    spares Twisted's register-for-writable round trip; otherwise it joins Twisted's buffer, so
    order is kept and the write gate still sees a slow reader.
    """

    __slots__ = ("_protocol", "_socket", "_transport")

    def __init__(self, protocol: Any, transport: Any) -> None:
        self._protocol = protocol
        self._transport = transport
        self._socket: socket.socket = transport.socket

    def write(self, frame: bytes) -> None:
        if self._protocol.state != _AUTOBAHN_STATE_OPEN:
            return  # closing: autobahn's sendMessage would refuse it too
        transport = self._transport
        if not transport._tempDataLen and transport.offset == len(transport.dataBuffer) and transport.connected:
            try:
                sent = self._socket.send(frame)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return  # the connection is failing; Twisted's reader sees it and closes the socket
            if sent == len(frame):
                return
            frame = frame[sent:]
        transport.write(frame)


def frame_writer_for(send: Callable[..., Any]) -> FrameWriter | None:
    """A direct writer for this socket, or None where it cannot be used (not daphne, TLS served
    by daphne itself, or an extension such as permessage-deflate negotiated)."""
    protocol = _daphne_protocol(send)
    transport = getattr(protocol, "transport", None)
    if (
        transport is None
        or getattr(protocol, "_perMessageCompress", None) is not None
        or not isinstance(getattr(transport, "socket", None), socket.socket)
        or not all(hasattr(transport, name) for name in ("_tempDataLen", "offset", "dataBuffer", "connected"))
    ):
        return None
    return FrameWriter(protocol, transport)


def _daphne_protocol(send: Callable[..., Any]) -> Any | None:
    """The daphne protocol object behind an ASGI ``send`` (``partial(Server.handle_reply, protocol)``)."""
    for _ in range(4):
        args = getattr(send, "args", None)
        if args:
            return args[0]
        inner = getattr(getattr(send, "__self__", None), "real_send", None)  # channels' session wrapper
        if inner is None:
            return None
        send = inner
    return None


def connection_open(send: Callable[..., Any]) -> bool:
    """False once the connection behind ``send`` is gone: the client left, or daphne/autobahn gave
    up on its opening handshake. In a reconnect storm, work done for such a connection is work
    taken from the ones still waiting (decision 0006)."""
    protocol = _daphne_protocol(send)
    if protocol is None:
        return True  # not served by daphne (tests): the ASGI server tells the app itself
    transport = getattr(protocol, "transport", None)
    return bool(getattr(transport, "connected", False)) and not getattr(transport, "disconnecting", False)


def control_frames_heard(send: Callable[..., Any]) -> Callable[[], float]:
    """When the client behind ``send`` last answered or sent a WebSocket ping (epoch seconds; 0 when
    never, or when not served by daphne)."""
    # A partial rather than a closure: every open socket keeps it (decision 0048).
    return functools.partial(getattr, _daphne_protocol(send), "wedsync_heard", 0.0)


def write_gate_for(send: Callable[..., Any], *, send_buffer: int) -> WriteGate | None:
    """A gate that tracks this socket's transport, or None when not served by daphne (tests).

    The kernel's send buffer is capped at ``send_buffer`` bytes too, because Linux would otherwise
    grow it for a slow reader and hide the reader's slowness from the gate (decision 0003).
    """
    protocol = _daphne_protocol(send)
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "registerProducer"):
        return None
    if not getattr(transport, "connected", True):  # gone during its handshake: nothing to gate
        return None
    gate = WriteGate()
    try:
        handle = transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()  # the finished HTTP upgrade's producer
        transport.registerProducer(gate, True)
    except Exception as error:  # an unexpected transport: run without back-pressure rather than fail the socket
        logger.warning("write_gate.unavailable", transport=type(transport).__name__, error=repr(error))
        return None
    return gate
