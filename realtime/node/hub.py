"""The node hub: fan-out that crosses the channel layer once per node (docs/architecture.md).

Each server process (a node) owns one channel-layer channel. For every wedding with subscribers
here, that channel joins the wedding's group, so a publish costs one layer message per node, not
per socket. The hub starts the node's loops, routes what the layer brings to the weddings' feeds
(realtime.node.feed), its presence (realtime.node.presence) or its sockets, and runs the whole
subscribe sequence. State here is this process's own sockets only; everything other nodes must
see (the log, the streams, presence, limits) lives in the database or Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from monitoring.metrics import THREAD_POOL_QUEUE
from monitoring.node_reports import registry_client
from realtime.daphne import patches as daphne_patches
from realtime.db import DatabaseWatch, per_socket_db
from realtime.gc_policy import gc_freeze_loop
from realtime.layer_send import layer_group_send, node_loop_register, node_loop_unregister
from realtime.limits.shedding import LoopLagWatch
from realtime.member_cache import MemberCache
from realtime.messages import ControlMessage, EventMessage, LayerMessage, PresenceBatch, layer_decode
from realtime.names import NODES_GROUP, Priority, wedding_group
from realtime.node import housekeeping
from realtime.node.feed import Subscription, WeddingFeed
from realtime.node.local import LocalHandOver
from realtime.node.presence import NodePresence
from realtime.node.presence_diffs import Viewer
from realtime.node.recent import ReplayedEvent
from realtime.node.registry import report_loop as registry_loop
from realtime.node.replay import (
    ConnectRead,
    Subscribed,
    access_check,
    checked_replay_hop,
)
from realtime.node.socket import Socket
from realtime.selectors import (
    NO_PAGE,
    MembershipView,
    Replay,
    SubscriptionDenied,
    stream_head,
)
from realtime.services.sockets import socket_observe_check, socket_subscribe_check
from wedsync.services.audit import ClientInfo

logger = structlog.get_logger(__name__)

RETRY_DELAY = 0.5  # a failed receive is tried again after this, doubling up to 5 s
START_RETRY_SECONDS = 0.5  # a failed hub start is tried again after this, doubling up to the max
START_RETRY_MAX_SECONDS = 5.0

_socket_subscribe_check = per_socket_db(socket_subscribe_check)  # wrapped once (realtime.db)
_socket_observe_check = per_socket_db(socket_observe_check)


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """What a ``subscribe`` op asks for (PROTOCOL.md section 3)."""

    topic: str
    wedding_id: int
    since: int | None
    epoch: str | None
    min_priority: Priority


class NodeHub:
    """This process's sockets and feeds. One per event loop (see :func:`node_hub`)."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel_name: str | None = None
        self.feeds: dict[int, WeddingFeed] = {}
        self.sockets: dict[str, Socket] = {}
        self.admitting = 0  # sockets past load shedding's count and not registered yet (sockets_counted)
        self.sockets_by_user: dict[int, set[str]] = {}
        self.presence = NodePresence(send_batch=self._send_to_nodes)
        self.members = MemberCache(
            seconds=settings.REALTIME_MEMBER_CACHE_SECONDS, size=settings.REALTIME_MEMBER_CACHE_SIZE
        )
        self._feed_locks: dict[int, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = asyncio.Event()
        self._start_task: asyncio.Task[None] | None = None
        self._start_failures = 0
        self._regroup = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.draining = False  # an operator asked (realtime.node.registry): no new sockets, the open ones close
        self.loop_lag = LoopLagWatch()  # read by load shedding (realtime.limits.shedding)
        self.database = DatabaseWatch()  # PostgreSQL away: database ops answered unavailable at once
        self.local = LocalHandOver()  # this process's events straight to its feeds (realtime.node.local)

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._started.is_set()

    def start_soon(self) -> None:
        """Start the hub in the background, once. A start that fails (Redis away) is tried again
        with backoff until it works or the hub stops: never half-started, never waited on forever."""
        if self._start_task is None:
            self._start_task = asyncio.create_task(self._start_until_running(), name="hub-start")

    async def ready(self, *, within: float) -> bool:
        """Whether the hub runs, waiting up to ``within`` for a first start under way. While a
        failed start waits for its retry the answer is False at once: a socket is better told to
        come back than held open with nothing behind it."""
        self.start_soon()
        if not self.running and not self._start_failures:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._started.wait(), within)
        return self.running

    async def _start_until_running(self) -> None:
        delay = START_RETRY_SECONDS
        while True:
            try:
                await self._start_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._start_failures += 1
                logger.warning("hub.start_failed", attempt=self._start_failures, retry_in=delay, error=repr(error))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311  jitter, not a secret
                delay = min(delay * 2, START_RETRY_MAX_SECONDS)
                continue
            if self._start_failures:
                logger.info("hub.started", after_failures=self._start_failures)
            return

    async def _start_once(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if "ASGI_THREADS" not in os.environ:  # an operator's ASGI_THREADS (read by daphne) wins
                # Every subscribe's thread hop reads the database and writes presence: asyncio's
                # default pool is too small for a reconnect storm (docs/benchmarks.md).
                pool = ThreadPoolExecutor(max_workers=settings.REALTIME_THREAD_POOL, thread_name_prefix="node-pool")
                self._loop.set_default_executor(pool)
                THREAD_POOL_QUEUE.set_function(pool._work_queue.qsize)  # read at each scrape
        if self.channel_name is None:
            self.channel_name = await self.layer.new_channel(prefix="node")
        await self.layer.group_add(NODES_GROUP, self.channel_name)
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="hub-receive"),
            asyncio.create_task(housekeeping.poll_loop(self), name="hub-poll"),
            asyncio.create_task(housekeeping.access_loop(self), name="hub-access"),
            *self.presence.start(self._loop),
            asyncio.create_task(self.loop_lag.run(), name="hub-loop-lag"),
        ]
        registry = registry_client()
        if registry is not None:
            reports = registry_loop(self, client=registry, every=settings.REALTIME_NODE_REPORT_SECONDS)
            self._tasks.append(asyncio.create_task(reports, name="hub-registry"))
        if settings.REALTIME_GC_FREEZE_SECONDS:
            freeze = gc_freeze_loop(
                freeze_every=settings.REALTIME_GC_FREEZE_SECONDS, full_every=settings.REALTIME_GC_FULL_SECONDS
            )
            self._tasks.append(asyncio.create_task(freeze, name="hub-gc"))
        node_loop_register(self._loop, local=self._local_message)
        self._started.set()

    @property
    def _channel(self) -> str:
        if self.channel_name is None:
            raise RuntimeError("the node hub has not started")
        return self.channel_name

    async def stop(self) -> None:
        if self._start_task is not None:
            self._start_task.cancel()
        if self._loop is not None:
            node_loop_unregister(self._loop)
        for task in self._tasks:
            task.cancel()
        await self.presence.stop()
        for feed in self.feeds.values():
            feed.stop()
        with contextlib.suppress(Exception):
            if self.channel_name is not None:
                await self.layer.group_discard(NODES_GROUP, self.channel_name)
                for wedding_id in self.feeds:
                    await self.layer.group_discard(wedding_group(wedding_id), self.channel_name)

    # --- the layer ----------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        delay = RETRY_DELAY
        while True:
            try:
                if self._regroup:
                    await self.join_groups()
                message = await self.layer.receive(self._channel)
                delay = RETRY_DELAY
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis restarting: memberships may be gone with it, so rejoin once it is back.
                logger.exception("hub.receive_failed")
                self._regroup = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                self._route(message)
            except Exception:  # one bad message must not end the node's receiving
                logger.exception("hub.route_failed", type=message.get("type"))

    def _route(self, raw: dict[str, Any]) -> None:
        message = layer_decode(raw)
        if isinstance(message, EventMessage):
            feed = self.feeds.get(message.wedding)
            if feed is not None:
                feed.offer(message)
        elif isinstance(message, PresenceBatch):
            for entry in message.entries:
                self.presence.offer(entry)
        else:
            self.local.control_heard(message)  # events committed after it may go straight to feeds again
            self.members.forget_for(message)
            for connection_id in list(self.sockets_by_user.get(message.user, ())):
                socket = self.sockets.get(connection_id)
                if socket is not None:
                    socket.on_control(message)

    def _local_message(self, message: LayerMessage) -> None:
        """What this process is sending to Redis, seen first (realtime.node.local): its events go
        to this node's feed now when they may, its controls hold the events back until heard."""
        now = time.monotonic()
        if isinstance(message, ControlMessage):
            self.local.control_sent(message, now=now)
        elif isinstance(message, EventMessage) and self.local.events_may_pass(now=now):
            feed = self.feeds.get(message.wedding)
            if feed is not None:
                feed.offer_next(message)

    async def join_groups(self) -> None:
        await self.layer.group_add(NODES_GROUP, self._channel)
        for wedding_id in list(self.feeds):
            await self.layer.group_add(wedding_group(wedding_id), self._channel)
        self._regroup = False

    async def _send_to_nodes(self, message: dict[str, Any]) -> None:
        await self.layer.group_send(NODES_GROUP, message)

    def control_broadcast(self, message: ControlMessage) -> None:
        """Tell every node (this one included) about something a socket of theirs must do."""
        layer_group_send(NODES_GROUP, message)

    # --- feeds --------------------------------------------------------------------------------------

    async def _feed(self, wedding_id: int) -> WeddingFeed:
        feed = self.feeds.get(wedding_id)
        if feed is not None:
            return feed
        lock = self._feed_locks.setdefault(wedding_id, asyncio.Lock())
        async with lock:
            feed = self.feeds.get(wedding_id)
            if feed is None:
                # Join first, then read the head: an event committed in between arrives with a seq
                # at or below the head and is skipped, and the subscriber's replay covers it.
                await self.layer.group_add(wedding_group(wedding_id), self._channel)
                head, epoch = await database_sync_to_async(stream_head)(wedding_id=wedding_id)
                feed = self.feeds[wedding_id] = WeddingFeed(wedding_id=wedding_id, last_seq=head, epoch=epoch)
                self.presence.feed_open(wedding_id)
        self._feed_locks.pop(wedding_id, None)
        return feed

    def feed_close(self, wedding_id: int) -> None:
        """Close a feed nobody uses: its task, its presence state, its group membership."""
        feed = self.feeds.pop(wedding_id, None)
        if feed is None:
            return
        feed.stop()
        self.presence.feed_close(wedding_id)
        if self.channel_name is not None:
            task = asyncio.create_task(self.layer.group_discard(wedding_group(wedding_id), self.channel_name))
            task.add_done_callback(_log_failure)

    # --- sockets ------------------------------------------------------------------------------------

    def sockets_counted(self) -> int:
        """What load shedding counts: the open sockets and those let in but not registered yet
        (their audit write, their accept), so that connects arriving together cannot all pass one
        count and overshoot the budget."""
        return len(self.sockets) + self.admitting

    @contextlib.contextmanager
    def admitting_one(self) -> Iterator[None]:
        self.admitting += 1
        try:
            yield
        finally:
            self.admitting -= 1

    def register(self, socket: Socket) -> None:
        self.sockets[socket.connection_id] = socket
        self.sockets_by_user.setdefault(socket.user_id, set()).add(socket.connection_id)

    def unregister(self, socket: Socket) -> None:
        self.sockets.pop(socket.connection_id, None)
        siblings = self.sockets_by_user.get(socket.user_id)
        if siblings is not None:
            siblings.discard(socket.connection_id)
            if not siblings:
                del self.sockets_by_user[socket.user_id]
        for wedding_id in list(self.feeds):
            self.unsubscribe(socket, wedding_id=wedding_id)

    def subscribed(self, socket: Socket, *, wedding_id: int) -> Subscription | None:
        feed = self.feeds.get(wedding_id)
        return None if feed is None else feed.subscriptions.get(socket.connection_id)

    def unsubscribe(self, socket: Socket, *, wedding_id: int) -> bool:
        feed = self.feeds.get(wedding_id)
        subscription = None if feed is None else feed.subscriptions.pop(socket.connection_id, None)
        if subscription is None:
            return False
        viewer = self.presence.viewer(wedding_id=wedding_id, connection_id=socket.connection_id)
        if viewer is not None:
            self.presence.detach(viewer, wedding_id=wedding_id)
        return True

    async def subscribe(
        self,
        socket: Socket,
        request: SubscribeRequest,
        *,
        client: ClientInfo,
        connect: ConnectRead | None,
        reply: Callable[[dict[str, Any]], None],
        observer: bool = False,
    ) -> Subscribed:
        """The whole subscribe sequence: the access check, the replay read, the presence join,
        ``reply`` (called with the reply's data, then presence diffs flow), and the replay to send.
        Raises :class:`SubscriptionDenied` (also when access changed while it ran).

        The membership the socket's ``connect`` read is the access check while it is fresh (see
        :meth:`ConnectRead.membership`), and a replay the wedding's feed holds is sent from memory:
        a resume then needs no thread hop at all (decision 0046). Otherwise a wedding the user
        belonged to at connect is attached ahead of its access check, which runs in the same thread
        hop as the replay read; any other is checked first, so no feed is made for a stranger's
        wedding and a refusal keeps what was there.

        An ``observer`` (a staff socket, decision 0029) is checked against staff scope first and
        only looks at presence: its device joins nobody's."""
        wedding_id = request.wedding_id
        check = None
        membership = None
        generation = self.members.generation
        trusted = None if observer or connect is None else connect.trusted(wedding_id=wedding_id, generation=generation)
        if observer:
            membership = await _socket_observe_check(user_id=socket.user_id, wedding_id=wedding_id, client=client)
        elif trusted is not None or (
            connect is not None and connect.holds(wedding_id) and not self.subscribed(socket, wedding_id=wedding_id)
        ):
            check = access_check(user_id=socket.user_id, wedding_id=wedding_id, client=client)
        else:
            membership = await _socket_subscribe_check(user_id=socket.user_id, wedding_id=wedding_id, client=client)
        feed, membership, replay, subscription, viewer, memory = await self._attach(
            socket, request, membership=membership, check=check, connect=None if trusted is None else connect
        )
        if observer:
            snapshot = await self.presence.look(viewer, wedding_id=wedding_id)
        else:
            snapshot = await self.presence.join(viewer, wedding_id=wedding_id)
        if self.subscribed(socket, wedding_id=wedding_id) is not subscription:
            self.presence.leave(viewer, wedding_id=wedding_id)
            raise SubscriptionDenied(code="forbidden", message="Your access changed: subscribe again.")
        reply(
            {
                "seq": replay.upto,
                "epoch": replay.epoch,
                "recovered": replay.recovered,
                "presence": {} if snapshot is None else snapshot.wire,
            }
        )
        self.presence.show(viewer, wedding_id=wedding_id, snapshot=snapshot)
        return Subscribed(feed, socket, membership, replay, subscription, request.min_priority, memory)

    async def _attach(
        self,
        socket: Socket,
        request: SubscribeRequest,
        *,
        membership: MembershipView | None,
        check: Callable[[], MembershipView] | None,
        connect: ConnectRead | None = None,
    ) -> tuple[WeddingFeed, MembershipView, Replay, Subscription, Viewer, tuple[ReplayedEvent, ...] | None]:
        """Attach ``socket`` to the wedding, then read what it missed: every event is in the replay,
        among the ones the subscription held meanwhile, or both, and :meth:`Subscription.go_live`
        sends each exactly once, in order. With a ``check`` instead of a ``membership`` the
        subscription holds every live event until the check says whose it is. The replay comes
        from the feed's memory when it holds it all, read in the same step as the attach."""
        wedding_id, topic, since = request.wedding_id, request.topic, request.since
        try:
            feed = await self._feed(wedding_id)
        except Exception:
            if check is not None:  # a wedding deleted since connect has no stream to make: say so
                await database_sync_to_async(check)()
            raise
        if membership is None and connect is not None:  # asked again after the awaits, in the attach's step
            membership = connect.trusted(wedding_id=wedding_id, generation=self.members.generation)
        subscription = Subscription(
            socket=socket,
            topic=topic,
            member_id=0 if membership is None else membership.member_id,
            role="" if membership is None else membership.role,
            min_priority=request.min_priority,
            cursor=since or 0,
            confirmed=membership is not None,
        )
        feed.subscriptions[socket.connection_id] = subscription
        viewer = self.presence.attach(wedding_id=wedding_id, socket=socket, topic=topic)
        memory = (
            None
            if membership is None
            else feed.held_replay(
                since=since, epoch=request.epoch, min_priority=request.min_priority, membership=membership
            )
        )
        if membership is not None and memory is not None:
            subscription.confirm(membership)
            viewer.confirm(membership)
            replay = Replay(upto=feed.last_seq, epoch=feed.epoch, recovered=True, first=NO_PAGE)
            return feed, membership, replay, subscription, viewer, memory
        try:
            membership, replay = await checked_replay_hop(
                membership=membership,
                check=check,
                wedding_id=wedding_id,
                since=since,
                epoch=request.epoch,
                min_priority=int(request.min_priority),
            )
        except BaseException:
            if feed.subscriptions.get(socket.connection_id) is subscription:
                del feed.subscriptions[socket.connection_id]
            self.presence.detach(viewer, wedding_id=wedding_id)
            raise
        subscription.confirm(membership)
        viewer.confirm(membership)
        return feed, membership, replay, subscription, viewer, None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("hub.background_failed", error=repr(task.exception()))


# One hub per event loop: a server process has one loop; tests start a fresh loop per test.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, NodeHub] = weakref.WeakKeyDictionary()


def node_hub() -> NodeHub:
    """This event loop's hub, started (in the background) if it was not; see :meth:`NodeHub.ready`."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = NodeHub()
    hub.start_soon()
    return hub


def node_hubs_problem() -> str | None:
    """What keeps this server process from taking sockets, for ``/readyz``; None when its hub runs,
    or when it serves no sockets at all (a test client, a management command). Safe from any thread."""
    if not daphne_patches.installed():
        return None
    hubs = _hubs_now()
    if not hubs:
        return "the socket hub has not started"
    if not all(hub.running for hub in hubs):
        return "the socket hub is not running yet (is the channel layer's Redis reachable?)"
    return None


def _hubs_now() -> list[NodeHub]:
    """This process's hubs, read from any thread."""
    for _attempt in range(3):  # the loop's thread may add a hub while this one reads
        try:
            return list(_hubs.values())
        except RuntimeError:
            continue
    return []


def node_database_problem() -> str | None:
    """For ``/readyz``: the database as this process's socket hubs last found it, without waiting."""
    if any(hub.database.away for hub in _hubs_now()):
        return "the socket hub found the database away and is probing it"
    return None


def node_database_failed() -> None:
    """``/readyz`` could not reach the database: the hubs answer database ops unavailable until it is back."""
    for hub in _hubs_now():
        hub.database.failed()


def node_drain_problem() -> str | None:
    """For ``/readyz``: why this process takes no sockets on purpose (an operator drains it), else None."""
    if any(hub.draining for hub in _hubs_now()):
        return "the node is draining (an operator asked, in the admin's Server nodes)"
    return None


def node_control_send(message: ControlMessage) -> Callable[[], None]:
    """A callable for ``transaction.on_commit`` that tells every node about an access change
    (without waiting for Redis: each node's access reconciliation catches a lost one)."""

    def send() -> None:
        layer_group_send(NODES_GROUP, message)

    return send
