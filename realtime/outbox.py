"""One socket's outgoing frames: bounded, highest priority first, ``low`` conflated.

The writer sends only while the transport is writable (daphne's flow control, see
``realtime.daphne.transport``), so a reader that cannot keep up fills this queue, not the server's
memory; past either bound the socket is cut off (4008) and resumes from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from monitoring.metrics import SOCKET_CUTOFFS
from realtime.daphne.transport import WriteGate
from realtime.framing import text_frame
from realtime.names import Priority

_AHEAD_SUFFIX = ',"ahead":true}'
# Every chat message matters; other low events only say the latest state of their subject.
_NEVER_CONFLATED = frozenset({"chat.message"})


def conflation_key(frame: dict[str, Any]) -> str | None:
    """Which queued ``low`` event a newer one replaces: same topic, type and subject (the record or
    the member it is about, else its sender); None for types never conflated."""
    if frame["type"] in _NEVER_CONFLATED:
        return None
    data = frame.get("data") or {}
    subject: object
    if "record" in data:  # a record's events are about the record, whoever changed it
        subject = f"{data['record']}:{data.get('id')}"
    else:
        subject = data.get("member") or (frame.get("from") or {}).get("member")
    return f"{frame['topic']}|{frame['type']}|{subject}"


@dataclass(order=True)
class _Entry:
    rank: tuple[int, int]
    text: str = field(compare=False)
    topic: str | None = field(compare=False, default=None)
    seq: int | None = field(compare=False, default=None)
    conflate_key: str | None = field(compare=False, default=None)
    live: bool = field(compare=False, default=True)


class Outbox:
    """Idle, an outbox holds no task, event or future: 10,000 idle sockets must stay small
    (PRODUCT.md's memory target). Its writer task exists only while frames are queued, and
    waiters are created only by whoever waits."""

    __slots__ = (
        "_bytes",
        "_closed",
        "_conflatable",
        "_counter",
        "_emptied",
        "_frames",
        "_gate",
        "_heap",
        "_max_bytes",
        "_max_frames",
        "_on_overflow",
        "_pending_seqs",
        "_send_text",
        "_spaced",
        "_write_frame",
        "_writer",
        "overflowed",
    )

    def __init__(
        self,
        *,
        send_text: Callable[[str], Awaitable[None]],
        gate: WriteGate | None,
        write_frame: Callable[[bytes], None] | None = None,
        max_frames: int,
        max_bytes: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self._send_text = send_text
        self._gate = gate
        # With a direct writer (under daphne) frames are written synchronously: a frame put while
        # nothing is queued and the socket is writable goes out at once, without a writer task.
        self._write_frame = write_frame
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._heap: list[_Entry] = []
        self._counter = itertools.count()
        self._conflatable: dict[str, _Entry] = {}
        self._pending_seqs: dict[str, list[int]] = {}  # topic -> seqs still queued, for "ahead"
        self._frames = 0
        self._bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._emptied: asyncio.Future[None] | None = None
        self._spaced: asyncio.Future[None] | None = None
        self._closed = False
        self.overflowed = False

    @property
    def queued(self) -> int:
        return self._frames

    def put(
        self,
        text: str,
        *,
        priority: Priority = Priority.HIGH,
        topic: str | None = None,
        seq: int | None = None,
        conflate_key: str | None = None,
        framed: bytes | None = None,
    ) -> None:
        """Queue a frame. Replies and control frames go at ``high`` so they are not starved.

        ``framed`` is ``text`` already framed for the wire (shared by every socket of the node).
        """
        if self._closed:
            return
        if self._write_frame is not None and not self._frames and (self._gate is None or self._gate.writable):
            self._write_frame(framed if framed is not None else text_frame(text.encode()))
            return
        if conflate_key is not None and priority == Priority.LOW:
            older = self._conflatable.pop(conflate_key, None)
            if older is not None and older.live:
                older.live = False
                self._forget(older)
        entry = _Entry(
            rank=(-priority, next(self._counter)), text=text, topic=topic, seq=seq, conflate_key=conflate_key
        )
        if conflate_key is not None and priority == Priority.LOW:
            self._conflatable[conflate_key] = entry
        heapq.heappush(self._heap, entry)
        self._frames += 1
        self._bytes += len(text)
        if topic is not None and seq is not None:
            self._pending_seqs.setdefault(topic, []).append(seq)
        if self._frames > self._max_frames or self._bytes > self._max_bytes:
            SOCKET_CUTOFFS.labels("outbox").inc()
            self.overflowed = True
            self.close()
            self._on_overflow()
            return
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())

    def _forget(self, entry: _Entry) -> None:
        self._frames -= 1
        self._bytes -= len(entry.text)
        if entry.topic is not None and entry.seq is not None:
            waiting = self._pending_seqs[entry.topic]
            waiting.remove(entry.seq)
            if not waiting:
                del self._pending_seqs[entry.topic]

    def _next(self) -> str | None:
        while self._heap:
            entry = heapq.heappop(self._heap)
            if not entry.live:
                continue
            if entry.conflate_key is not None and self._conflatable.get(entry.conflate_key) is entry:
                del self._conflatable[entry.conflate_key]
            self._forget(entry)
            text = entry.text
            if entry.topic is not None and entry.seq is not None:
                waiting = self._pending_seqs.get(entry.topic)
                if waiting and min(waiting) < entry.seq:
                    # Sent before older events of its topic: the client must not resume past it.
                    text = text[:-1] + _AHEAD_SUFFIX
            return text
        return None

    async def _write_queued(self) -> None:
        """The writer: send queued frames in priority order while the transport accepts them, then end."""
        try:
            while not self._closed:
                if self._gate is not None and not self._gate.writable:
                    # Wait before taking a frame: "nothing queued" must mean "nothing on its way"
                    # too, or put() could overtake it.
                    await self._gate.wait_writable()
                    continue
                text = self._next()
                if text is None:
                    return
                if self._write_frame is not None:
                    self._write_frame(text_frame(text.encode()))
                    await asyncio.sleep(0)  # a long backlog must not starve the loop
                else:
                    await self._send_text(text)
                if self._spaced is not None and self._frames < self._max_frames // 2:
                    _resolve(self._spaced)
                    self._spaced = None
        finally:
            self._writer = None
            if self._emptied is not None and (self._closed or not self._frames):
                _resolve(self._emptied)
                self._emptied = None

    async def put_paced(self, text: str, **kwargs: Any) -> None:
        """:meth:`put` for a long stream (a replay): waits while the queue is half full, so a big
        replay flows at the reader's pace instead of overflowing the bound."""
        while not self._closed and self._frames >= self._max_frames // 2:
            if self._spaced is None:
                self._spaced = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._spaced)
        self.put(text, **kwargs)

    async def drain(self, *, within: float) -> None:
        """Wait (a bounded time) until everything queued has been handed to the transport."""
        if self._writer is None:
            return
        if self._emptied is None:
            self._emptied = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._emptied), within)

    def close(self) -> None:
        self._closed = True
        for waiter in (self._emptied, self._spaced):
            if waiter is not None:
                _resolve(waiter)
        self._emptied = self._spaced = None
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
