"""Lua script calls made during one event-loop turn go to Redis together, as one pipeline.

A reconnect storm makes thousands of device-limit calls within seconds. One round trip each, through
a pool of a few dozen connections, made each call wait for the busy loop's next turn to read its
reply and hand the connection back: the pool ran dry, callers waited past its timeout, and devices
were let in uncounted or left counted after they closed (docs/benchmarks.md, reconnect storm).
Batched, a turn's calls cost one pipeline whatever their number.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

BATCH_MAX = 500  # calls per pipeline: bounds the reply a node reads in one go


class ScriptBatcher:
    """One per event loop (its Redis connections belong to that loop)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    def call(self, script: AsyncScript, *, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Run ``script`` in this turn's pipeline; the future gets its reply (or its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), BATCH_MAX):
            task = asyncio.create_task(self._send(batch[start : start + BATCH_MAX]), name="redis-script-batch")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _future in batch:
                    await script(keys=keys, args=args, client=pipe)  # queued in the pipeline, not sent
                replies = await pipe.execute(raise_on_error=False)
        except Exception as error:  # the whole pipeline failed (Redis away): every caller hears it
            for *_call, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_call, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller gave up (cancelled)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def close(self) -> None:
        """Wait for the pipelines in flight (a node's last calls before its loop ends)."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
