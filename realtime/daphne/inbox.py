"""One WebSocket's input queue for its application, bounded so a flood of frames cannot grow the node."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import structlog

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InboxBounds:
    """How much a socket's application may have waiting to be read (REALTIME_INBOX_MAX_FRAMES /
    _BYTES): past the soft bound the server stops reading the socket (TCP back-pressure: the
    client's sends slow down) until half of it is read. Reading stops between network reads, so
    what one read holds still comes in: up to 64 KiB, which can be 10,000 tiny frames. The hard
    bound (sixteen times the frames, four times the bytes: a real client's burst of acks after a
    dead zone is well under it) is only reached by such a flood, and closes the socket 1008."""

    frames: int
    bytes: int

    @property
    def hard_frames(self) -> int:
        return self.frames * HARD_FRAMES_FACTOR

    @property
    def hard_bytes(self) -> int:
        return self.bytes * HARD_BYTES_FACTOR


HARD_FRAMES_FACTOR, HARD_BYTES_FACTOR = 16, 4
INBOX_OVERFLOW_CLOSE = 1008  # RFC 6455 policy violation
_INBOX_OVERFLOW_ERROR = json.dumps(
    {"op": "error", "code": "rate_limited", "message": "Frames arrive faster than they can be handled: slow down."}
).encode()


def _payload_size(item: dict[str, Any]) -> int:
    payload = item.get("text")
    if payload is None:
        payload = item.get("bytes")
    return len(payload) if payload is not None else 0


class AppInbox:
    """A WebSocket connection's input queue for its application, in place of daphne's
    ``asyncio.Queue`` (three deques and an event, decision 0016 has its size): daphne only calls
    ``put_nowait``, the consumer only awaits ``get``. Bounded (:class:`InboxBounds`): daphne puts
    every frame it reads, whether or not the consumer is free to take it (a paced replay to a
    client that does not read keeps it busy for as long as the client likes)."""

    __slots__ = ("_bounds", "_bytes", "_closing", "_items", "_paused", "_protocol", "_waiter")

    def __init__(self, protocol: Any = None, bounds: InboxBounds | None = None) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None
        self._protocol = protocol  # daphne's protocol: its transport is paused, or it is closed
        self._bounds = bounds
        self._bytes = 0
        self._paused = False
        self._closing = False

    def put_nowait(self, item: Any) -> None:
        bounds = self._bounds
        if bounds is not None and item.get("type") == "websocket.receive":
            if self._closing:
                return  # closed for a flood: what follows is not read
            size = _payload_size(item)
            if len(self._items) >= bounds.hard_frames or self._bytes + size > bounds.hard_bytes:
                self._overflow()
                return
            self._bytes += size
            if not self._paused and (len(self._items) + 1 >= bounds.frames or self._bytes >= bounds.bytes):
                self._pause()
        self._items.append(item)  # connect and disconnect always get through
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            self._waiter = None

    async def get(self) -> Any:
        # The item stays queued until the getter resumes, so a cancelled get loses nothing; a
        # cancelled get cancels its waiter, which the next get replaces. One reader only (two
        # would share the waiter). Not asyncio.shield: its outer future and two callbacks stayed
        # with every idle socket (decision 0048).
        while not self._items:
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        item = self._items.pop(0)
        if self._bounds is not None and item.get("type") == "websocket.receive":
            self._bytes -= _payload_size(item)
            if self._paused and len(self._items) <= self._bounds.frames // 2 and self._bytes <= self._bounds.bytes // 2:
                self._resume()
        return item

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    @property
    def paused(self) -> bool:
        return self._paused

    def _pause(self) -> None:
        transport = getattr(self._protocol, "transport", None)
        if transport is not None and hasattr(transport, "pauseProducing"):
            transport.pauseProducing()  # stops reading the socket: the client's sends back up
            self._paused = True
            logger.info("inbox.paused", frames=len(self._items) + 1, bytes=self._bytes)

    def _resume(self) -> None:
        self._paused = False
        transport = getattr(self._protocol, "transport", None)
        if transport is not None and getattr(transport, "connected", False):
            transport.resumeProducing()

    def _overflow(self) -> None:
        self._closing = True
        logger.warning("inbox.overflow", frames=len(self._items), bytes=self._bytes)
        protocol = self._protocol
        if protocol is not None and protocol.state == protocol.STATE_OPEN:
            protocol.sendMessage(_INBOX_OVERFLOW_ERROR, False)
            protocol.sendCloseFrame(code=INBOX_OVERFLOW_CLOSE, reasonUtf8=b"frames arrive too fast")
        if self._paused:  # read again, or the client's answering close frame is never seen
            self._resume()
