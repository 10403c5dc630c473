"""The lean input queue daphne hands each WebSocket application (realtime.daphne.inbox.AppInbox)."""

from __future__ import annotations

import asyncio

from realtime.daphne.inbox import AppInbox, InboxBounds


async def test_messages_come_out_in_order_whether_queued_or_awaited() -> None:
    inbox = AppInbox()
    inbox.put_nowait({"type": "websocket.connect"})
    inbox.put_nowait({"type": "websocket.receive", "text": "1"})
    assert await inbox.get() == {"type": "websocket.connect"}
    assert await inbox.get() == {"type": "websocket.receive", "text": "1"}

    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert await asyncio.wait_for(waiting, 1) == {"type": "websocket.disconnect", "code": 1000}
    assert inbox.empty()


async def test_a_cancelled_get_leaves_the_message_for_the_next_one() -> None:
    inbox = AppInbox()
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)

    inbox.put_nowait({"type": "websocket.receive", "text": "kept"})
    waiting.cancel()  # cancelled after the message arrived, before the getter resumed
    await asyncio.gather(waiting, return_exceptions=True)

    assert inbox.qsize() == 1
    assert await asyncio.wait_for(inbox.get(), 1) == {"type": "websocket.receive", "text": "kept"}


async def test_a_get_cancelled_while_waiting_does_not_stop_the_next_one_from_waking() -> None:
    inbox = AppInbox()
    cancelled = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()  # daphne cancelling an application mid-wait; its waiter goes with it
    await asyncio.gather(cancelled, return_exceptions=True)

    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    # It waits on the waiter itself, not on a wrapper around it (asyncio.shield's, decision 0048).
    assert waiting._fut_waiter is inbox._waiter  # type: ignore[attr-defined]
    inbox.put_nowait({"type": "websocket.receive", "text": "after"})

    assert await asyncio.wait_for(waiting, 1) == {"type": "websocket.receive", "text": "after"}
    assert cancelled.cancelled() and inbox.empty()


class _Transport:
    """What AppInbox asks of daphne's TCP transport: stop and start reading."""

    def __init__(self) -> None:
        self.connected = True
        self.reading = True

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


class _Protocol:
    STATE_OPEN = 3

    def __init__(self) -> None:
        self.transport = _Transport()
        self.state = self.STATE_OPEN
        self.sent: list[bytes] = []
        self.closed_with: int | None = None

    def sendMessage(self, payload: bytes, is_binary: bool) -> None:
        self.sent.append(payload)

    def sendCloseFrame(self, code: int, reasonUtf8: bytes) -> None:
        self.closed_with = code


def _closed_with(protocol: _Protocol) -> int | None:
    return protocol.closed_with


def _reading(protocol: _Protocol) -> bool:
    return protocol.transport.reading


def _frame(size: int = 10) -> dict:
    return {"type": "websocket.receive", "text": "x" * size}


async def test_a_full_inbox_stops_reading_and_reads_again_once_half_is_handled() -> None:
    protocol = _Protocol()
    inbox = AppInbox(protocol, InboxBounds(frames=8, bytes=1_000_000))
    for _ in range(7):
        inbox.put_nowait(_frame())
    assert _reading(protocol)
    inbox.put_nowait(_frame())
    assert not _reading(protocol)
    assert inbox.paused
    for _ in range(3):
        await inbox.get()
    assert not _reading(protocol)  # 5 left: above half
    await inbox.get()
    assert _reading(protocol)
    assert inbox.qsize() == 4


async def test_bytes_count_as_much_as_frames() -> None:
    protocol = _Protocol()
    inbox = AppInbox(protocol, InboxBounds(frames=100, bytes=1000))
    inbox.put_nowait(_frame(600))
    assert _reading(protocol)
    inbox.put_nowait(_frame(500))
    assert not _reading(protocol)
    await inbox.get()  # 500 bytes left: half the bound
    assert _reading(protocol)


async def test_a_flood_past_the_hard_bound_is_closed_1008_and_not_kept() -> None:
    protocol = _Protocol()
    inbox = AppInbox(protocol, InboxBounds(frames=4, bytes=1_000_000))
    for _ in range(64):  # a network read already held them: reading was paused at 4, too late
        inbox.put_nowait(_frame())
    assert _closed_with(protocol) is None
    inbox.put_nowait(_frame())
    assert _closed_with(protocol) == 1008
    assert _reading(protocol)  # read again, so the client's answering close frame is seen
    assert b'"code": "rate_limited"' in protocol.sent[0]
    inbox.put_nowait(_frame())
    assert inbox.qsize() == 64  # nothing more is kept
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1008})  # the end still gets through
    assert inbox.qsize() == 65
