"""Handing a message to the channel layer after a commit, without waiting for Redis.

A publish is answered once its event is committed; the fan-out that follows is best effort, since a
node that misses it reads the event back from the log (docs/architecture.md). So the thread that
committed must not wait for the layer: a ``group_send`` to a Redis that stopped answering (a network
partition, not a refused connection) would hold it for the layer's socket timeout, and with it a
place in the node's thread pool and the publisher's reply.

In a server process the send is handed to the node's event loop and the thread goes on at once;
sends still waiting there are bounded in number and in time, past either they are dropped (logged
and counted) and the gap repair delivers their events. Elsewhere (a Celery worker, a management
command, the test client's views) there is no node loop to hand it to, and the send runs here,
bounded by the same timeout.

The node's hub sees each message on the node loop before its send to Redis, and may hand an event
straight to its own feed (realtime.node.local): under load each step of the way through Redis
waited a turn of a busy loop. The copy Redis brings back is a duplicate the feed drops by its seq.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from monitoring.metrics import LAYER_SENDS_DROPPED
from realtime.messages import EventMessage, LayerMessage, layer_encode

logger = structlog.get_logger(__name__)

SEND_TIMEOUT_SECONDS = 5.0  # a healthy Redis answers in milliseconds
MAX_PENDING_SENDS = 1000  # per node loop; past it new sends are dropped until some complete

_node_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()
# Each node loop's hub sees what this process sends, before Redis does: its own events reach its
# feeds at once, not after a round trip through Redis under a busy loop (realtime.node.local).
_local_messages: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Callable[[LayerMessage], None]] = (
    weakref.WeakKeyDictionary()
)
_registry_lock = threading.Lock()


def node_loop_register(loop: asyncio.AbstractEventLoop, *, local: Callable[[LayerMessage], None] | None = None) -> None:
    """The node hub's loop, which takes the sends of this process's threads from now on;
    ``local`` is called on it with each message sent, before its send to Redis."""
    with _registry_lock:
        _node_loops.setdefault(loop, set())
        if local is not None:
            _local_messages[loop] = local


def node_loop_unregister(loop: asyncio.AbstractEventLoop) -> None:
    with _registry_lock:
        _node_loops.pop(loop, None)
        _local_messages.pop(loop, None)


def _node_loop() -> asyncio.AbstractEventLoop | None:
    with _registry_lock:
        for loop in list(_node_loops):
            if loop.is_running() and not loop.is_closed():
                return loop
    return None


def layer_group_send(group: str, message: LayerMessage) -> None:
    """Send ``message`` to ``group`` without waiting for it; never raises. Call it after the commit
    whose data the message announces (``transaction.on_commit``)."""
    loop = _node_loop()
    if loop is not None:
        try:
            running_here = asyncio.get_running_loop() is loop
        except RuntimeError:
            running_here = False
        if running_here:
            _schedule(loop, group, message)
            return
        try:
            loop.call_soon_threadsafe(_schedule, loop, group, message)
        except RuntimeError as error:  # the loop closed since it was found (the node is stopping)
            _dropped(group, message, reason="error", error=error)
        return
    try:
        async_to_sync(_send_bounded)(group, message)
    except Exception as error:
        _dropped(group, message, reason="timeout" if isinstance(error, TimeoutError) else "error", error=error)


def _schedule(loop: asyncio.AbstractEventLoop, group: str, message: LayerMessage) -> None:
    pending = _node_loops.get(loop)
    if pending is None:  # the hub stopped meanwhile: nobody here to fan out to anyway
        pending = set()
    sending = len(pending) < MAX_PENDING_SENDS
    local = _local_messages.get(loop)
    # An event still reaches this node's own feed when its send is dropped; a control that is not
    # sent will never be heard back, so the hub must not wait for it.
    if local is not None and (sending or isinstance(message, EventMessage)):
        try:
            local(message)
        except Exception:  # the send to Redis still goes, and brings the event
            logger.exception("layer.local_failed", group=group)
    if not sending:
        _dropped(group, message, reason="overflow", error=None)
        return
    send = _PendingSend(group=group, message=message, task=loop.create_task(_send(group, message), name="layer-send"))
    pending.add(send.task)
    deadline = loop.call_later(SEND_TIMEOUT_SECONDS, send.expire)
    send.task.add_done_callback(functools.partial(send.settle, pending=pending, deadline=deadline))


@dataclass(slots=True)
class _PendingSend:
    """One send waiting on the node loop. Its deadline is a timer beside the task, not a timeout
    inside it: the Redis client may absorb a cancellation (a retry, a lock handed over at the same
    moment) and the drop must still be counted on time. The task stays pending until it really ends,
    so the bound on waiting sends holds."""

    group: str
    message: LayerMessage
    task: asyncio.Task[None]
    expired: bool = False

    def expire(self) -> None:
        if self.task.done():
            return
        self.expired = True
        _dropped(self.group, self.message, reason="timeout", error=TimeoutError())
        self.task.cancel()

    def settle(
        self, task: asyncio.Task[None], *, pending: set[asyncio.Task[None]], deadline: asyncio.TimerHandle
    ) -> None:
        pending.discard(task)
        deadline.cancel()
        if task.cancelled():  # it expired (counted then), or the loop is stopping
            return
        error = task.exception()  # retrieved even when late, so asyncio does not report it as lost
        if error is not None and not self.expired:
            _dropped(self.group, self.message, reason="error", error=error)


async def _send(group: str, message: LayerMessage) -> None:
    await get_channel_layer().group_send(group, layer_encode(message))


async def _send_bounded(group: str, message: LayerMessage) -> None:
    async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
        await _send(group, message)


def _dropped(group: str, message: LayerMessage, *, reason: str, error: BaseException | None) -> None:
    LAYER_SENDS_DROPPED.labels(reason=reason).inc()
    logger.warning(
        "layer.send_dropped",
        group=group,
        type=type(message).__name__,
        seq=getattr(message, "seq", None),
        reason=reason,
        error=repr(error) if error is not None else None,
    )
