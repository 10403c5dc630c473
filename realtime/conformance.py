"""TEST ONLY: the WebSocket echo the Autobahn testsuite drives (``make conformance``, decision 0020).

The fuzzing client checks a server's framing by having it echo every message back: that needs a
route which answers anyone, unauthenticated, with whatever it was sent, which the product must
never serve. :mod:`realtime.routing` adds it only when ``REALTIME_CONFORMANCE_ECHO`` is on, and the
settings refuse that outside DEBUG. It is a bare ASGI application on purpose: everything between
it and the wire is the product's own stack (daphne with :func:`realtime.daphne.patches.install`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

CONFORMANCE_ECHO_PATH = "ws/conformance/echo/"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def conformance_echo_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Accept, then send every text or binary message back as it came, empty ones included."""
    if scope["type"] != "websocket":
        raise ValueError(f"the conformance echo serves WebSockets, not {scope['type']!r}")
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.disconnect":
            return
        elif kind == "websocket.receive":
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message["text"]})
