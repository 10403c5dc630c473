"""The lean input queue daphne hands each WebSocket application (realtime.daphne_support.AppInbox)."""

from __future__ import annotations

import asyncio

from realtime.daphne_support import AppInbox


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
