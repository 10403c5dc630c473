"""The node hub: fan-out that crosses the channel layer once per node (docs/architecture.md).

Each server process (a node) owns one channel-layer channel. For every wedding with subscribers
here, that channel joins the wedding's group, so a publish costs one layer message per node, not
per socket. A :class:`WeddingFeed` per wedding takes those messages strictly in ``seq`` order: a
message whose ``seq`` skips ahead means the layer dropped something (capacity, a Redis restart),
and the feed reads the missing events back from the log before going on. A poll of the streams'
heads catches a dropped *last* event, which no later event would reveal. Subscriptions then hand
each event to their socket's outbox if the member is in its audience.

State here is this process's own sockets only; everything other nodes must see (the log, the
streams, presence, limits) lives in the database or Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import structlog
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from realtime.daphne_support import text_frame
from realtime.db import per_socket_db
from realtime.gc_policy import gc_freeze_loop
from realtime.limits import DEVICE_REFRESH_SECONDS, node_limits
from realtime.names import LAYER_CONTROL, LAYER_EVENT, NODES_GROUP, Priority, wedding_group
from realtime.outbox import conflation_key
from realtime.protocol import encode
from realtime.selectors import (
    MembershipView,
    Replay,
    access_snapshot,
    events_after,
    events_replay,
    stream_head,
    stream_heads,
    unacknowledged_events,
)

logger = structlog.get_logger(__name__)

POLL_INTERVAL = 1.0
IDLE_FEED_SECONDS = 60.0
RETRY_DELAY = 0.5
RECONCILE_SECONDS = 5.0
RESEND_SECONDS = 60.0  # an unacknowledged emergency or critical event is sent again this often
RESEND_WINDOW_SECONDS = 3600.0  # for this long after it was published
MAX_RESENDS = 5
HELD_MAX = 2000  # live events held for one subscription while its replay is sent


class Socket(Protocol):
    """What the hub needs of a connected socket (the consumer)."""

    connection_id: str
    user_id: int

    def push_event(
        self,
        text: str,
        *,
        priority: Priority,
        topic: str | None,
        seq: int | None,
        conflate_key: str | None,
        framed: bytes | None = None,
    ) -> None: ...

    def on_control(self, message: dict[str, Any]) -> None: ...

    def too_slow(self) -> None: ...


@dataclass(slots=True, eq=False)
class Subscription:
    socket: Socket
    topic: str
    member_id: int
    role: str
    min_priority: int
    cursor: int = 0  # the highest seq this subscription has handled (delivered or filtered out)
    resent: dict[int, int] = field(default_factory=dict)  # seq -> times re-sent unacknowledged
    held: list[dict[str, Any]] | None = field(default_factory=list)  # live events held during replay
    # False while attached ahead of its access check (see NodeHub.subscribe): it holds everything
    # then, since whose events it may see is not known yet, and reconciliation leaves it alone.
    confirmed: bool = True

    def offer(self, message: dict[str, Any]) -> None:
        if self.held is not None:
            if self.confirmed and not self._wants(message):
                return  # go_live moves the cursor past it anyway
            if len(self.held) >= HELD_MAX:  # a replay that cannot keep up with the room: resume later
                self.socket.too_slow()
                return
            self.held.append(message)
        else:
            self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        seq: int = message["seq"]
        if seq <= self.cursor:
            return  # already sent by the replay
        self.cursor = seq
        if self._wants(message):
            self.socket.push_event(
                message["text"],
                priority=Priority(message["priority"]),
                topic=self.topic,
                seq=seq,
                conflate_key=message["conflate_key"],
                framed=message.get("framed"),
            )

    def _wants(self, message: dict[str, Any]) -> bool:
        return message["priority"] >= self.min_priority and (
            self.role in message["roles"] or self.member_id in message["members"]
        )

    def confirm(self, membership: MembershipView) -> None:
        """The access check passed: take the member's identity and drop held events it may not see."""
        self.member_id, self.role, self.confirmed = membership.member_id, membership.role, True
        if self.held:
            self.held = [message for message in self.held if self._wants(message)]

    def go_live(self, *, upto: int) -> None:
        """After the replay up to ``upto``: deliver what was held (newer events only), then live."""
        # upto, not max(cursor, upto): a ``since`` beyond the stream (history reset) is answered
        # recovered:false, and live delivery continues right after upto.
        self.cursor = upto
        held, self.held = self.held or [], None
        for message in held:
            self._deliver(message)


_REPAIR = "repair"


class WeddingFeed:
    """One wedding's events on this node, in seq order, gaps repaired from the log."""

    def __init__(self, *, wedding_id: int, last_seq: int) -> None:
        self.wedding_id = wedding_id
        self.last_seq = last_seq
        self.subscriptions: dict[str, Subscription] = {}
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.suspected_head = 0
        self.idle_since: float | None = None
        self.task = asyncio.create_task(self._run(), name=f"feed-{wedding_id}")

    async def _run(self) -> None:
        while True:
            message = await self.inbox.get()
            try:
                await self._take(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad message must not stop the wedding's feed
                logger.exception("feed.message_failed", wedding=self.wedding_id, seq=message.get("seq"))

    async def _take(self, message: dict[str, Any]) -> None:
        if message.get("type") == _REPAIR:
            if message["upto"] > self.last_seq:
                logger.info("feed.gap", wedding=self.wedding_id, after=self.last_seq, head=message["upto"], by="head")
            await self._repair(upto=message["upto"])
            return
        seq = message["seq"]
        if seq <= self.last_seq:
            return  # a duplicate, or already read from the log
        if seq > self.last_seq + 1:
            logger.info("feed.gap", wedding=self.wedding_id, after=self.last_seq, got=seq, by="seq")
            await self._repair(upto=seq - 1)
        self._dispatch(message)

    async def _repair(self, *, upto: int) -> None:
        while self.last_seq < upto:
            try:
                missed = await database_sync_to_async(events_after)(
                    wedding_id=self.wedding_id, after=self.last_seq, upto=upto
                )
            except Exception:
                logger.exception("feed.repair_failed", wedding=self.wedding_id)
                await asyncio.sleep(RETRY_DELAY)
                continue
            if not missed:
                return
            for message in missed:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["seq"] != self.last_seq + 1:
            logger.error("feed.out_of_order", wedding=self.wedding_id, last=self.last_seq, got=message["seq"])
        self.last_seq = message["seq"]
        # Once per node, shared by every local socket.
        message["text"] = encode(message["frame"])
        message["framed"] = text_frame(message["text"].encode())
        message["conflate_key"] = conflation_key(message["frame"])
        for subscription in list(self.subscriptions.values()):
            subscription.offer(message)

    def stop(self) -> None:
        self.task.cancel()


class NodeHub:
    """This process's sockets and feeds. One per event loop (see :func:`node_hub`)."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel_name: str | None = None
        self.feeds: dict[int, WeddingFeed] = {}
        self.sockets: dict[str, Socket] = {}
        self.sockets_by_user: dict[int, set[str]] = {}
        self._feed_locks: dict[int, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = asyncio.Event()
        self._starting = False
        self._regroup = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._starting:
            await self._started.wait()
            return
        self._starting = True
        self.channel_name = await self.layer.new_channel(prefix="node")
        await self.layer.group_add(NODES_GROUP, self.channel_name)
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="hub-receive"),
            asyncio.create_task(self._poll_loop(), name="hub-poll"),
        ]
        if settings.REALTIME_GC_FREEZE_SECONDS:
            freeze = gc_freeze_loop(
                freeze_every=settings.REALTIME_GC_FREEZE_SECONDS, full_every=settings.REALTIME_GC_FULL_SECONDS
            )
            self._tasks.append(asyncio.create_task(freeze, name="hub-gc"))
        self._started.set()

    @property
    def _channel(self) -> str:
        if self.channel_name is None:
            raise RuntimeError("the node hub has not started")
        return self.channel_name

    async def _receive_loop(self) -> None:
        delay = RETRY_DELAY
        while True:
            try:
                if self._regroup:
                    await self._join_groups()
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
            self._route(message)

    async def _join_groups(self) -> None:
        await self.layer.group_add(NODES_GROUP, self._channel)
        for wedding_id in list(self.feeds):
            await self.layer.group_add(wedding_group(wedding_id), self._channel)
        self._regroup = False

    async def _poll_loop(self) -> None:
        """The node's housekeeping, once a second: find events the layer never delivered (a dropped
        last event, a Redis restart), re-send unacknowledged emergencies, reconcile access, keep
        device entries and group memberships alive, and close feeds nobody uses."""
        loop = asyncio.get_running_loop()
        refresh_every = max(getattr(self.layer, "group_expiry", 86400) / 3, 30)
        next_refresh = loop.time() + refresh_every
        next_device_refresh = loop.time() + DEVICE_REFRESH_SECONDS
        next_reconcile = loop.time() + RECONCILE_SECONDS
        next_resend = loop.time() + RESEND_SECONDS
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                if self.feeds:
                    heads = await database_sync_to_async(stream_heads)(wedding_ids=list(self.feeds))
                    for wedding_id, head in heads.items():
                        feed = self.feeds.get(wedding_id)
                        if feed is None or head <= feed.last_seq:
                            continue
                        # Ahead twice in a row: not just in flight, but lost.
                        if feed.suspected_head and feed.suspected_head <= head:
                            feed.inbox.put_nowait({"type": _REPAIR, "upto": feed.suspected_head})
                        feed.suspected_head = head
                self._close_idle_feeds(loop.time())
                if loop.time() >= next_resend:
                    await self._resend_unacknowledged()
                    next_resend = loop.time() + RESEND_SECONDS
                if loop.time() >= next_reconcile:
                    await self._reconcile_access()
                    next_reconcile = loop.time() + RECONCILE_SECONDS
                if loop.time() >= next_device_refresh:  # device entries expire unless renewed
                    await node_limits().device_refresh(connection_ids=list(self.sockets))
                    next_device_refresh = loop.time() + DEVICE_REFRESH_SECONDS
                if loop.time() >= next_refresh:  # group memberships expire unless renewed
                    await self._join_groups()
                    next_refresh = loop.time() + refresh_every
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub.poll_failed")

    async def _resend_unacknowledged(self) -> None:
        """Emergency and critical events a member has not acknowledged (``ack``) are sent again,
        marked ``"resent": true``, every RESEND_SECONDS, at most MAX_RESENDS times per socket."""
        if not self.feeds:
            return
        now = timezone.now()
        pending = await database_sync_to_async(unacknowledged_events)(
            wedding_ids=list(self.feeds),
            newer_than=now - timedelta(seconds=RESEND_WINDOW_SECONDS),
            older_than=now - timedelta(seconds=RESEND_SECONDS),
        )
        pending_seqs: dict[int, set[int]] = {}
        for event in pending:
            pending_seqs.setdefault(event.wedding_id, set()).add(event.seq)
        for wedding_id, wedding_feed in self.feeds.items():  # forget what is acknowledged or too old
            keep = pending_seqs.get(wedding_id, set())
            for subscription in wedding_feed.subscriptions.values():
                subscription.resent = {seq: n for seq, n in subscription.resent.items() if seq in keep}
        for event in pending:
            feed = self.feeds.get(event.wedding_id)
            if feed is None:
                continue
            for subscription in list(feed.subscriptions.values()):
                due = (
                    subscription.confirmed
                    and event.seq <= subscription.cursor  # delivered already (later ones go the live way)
                    and subscription.member_id not in event.acknowledged_by
                    and event.priority >= subscription.min_priority
                    and (subscription.role in event.roles or subscription.member_id in event.members)
                    and subscription.resent.get(event.seq, 0) < MAX_RESENDS
                )
                if due:
                    subscription.resent[event.seq] = subscription.resent.get(event.seq, 0) + 1
                    subscription.socket.push_event(
                        event.text, priority=Priority(event.priority), topic=None, seq=None, conflate_key=None
                    )

    async def _reconcile_access(self) -> None:
        """The safety net under the control messages (which ride the same lossy layer): every few
        seconds, compare this node's subscriptions and sockets with the database's roles and token
        generations, and act on any change a lost message did not bring."""
        # Judge only the subscriptions that existed before the read: one made meanwhile was checked
        # against the database when it was made, and one still waiting for its check gets it there.
        checked = [
            (feed, connection_id, subscription)
            for feed in self.feeds.values()
            for connection_id, subscription in feed.subscriptions.items()
            if subscription.confirmed
        ]
        if not checked and not self.sockets_by_user:
            return
        members, generations = await database_sync_to_async(access_snapshot)(
            member_ids=sorted({subscription.member_id for _f, _c, subscription in checked}),
            user_ids=sorted(self.sockets_by_user),
        )
        for feed, connection_id, subscription in checked:
            if feed.subscriptions.get(connection_id) is not subscription:
                continue
            state = members.get(subscription.member_id)
            expected = (subscription.role, feed.wedding_id, subscription.socket.user_id, True)
            if state != expected:
                reason = "removed" if state is None else "deactivated" if not state[3] else "role_changed"
                subscription.socket.on_control({"kind": "member_changed", "wedding": feed.wedding_id, "reason": reason})
        for user_id, connection_ids in list(self.sockets_by_user.items()):
            for connection_id in list(connection_ids):
                socket = self.sockets.get(connection_id)
                if socket is not None:
                    socket.on_control({"kind": "tokens_revoked", "generation": generations.get(user_id, 0)})

    def _close_idle_feeds(self, now: float) -> None:
        for wedding_id, feed in list(self.feeds.items()):
            if feed.subscriptions:
                feed.idle_since = None
            elif feed.idle_since is None:
                feed.idle_since = now
            elif now - feed.idle_since > IDLE_FEED_SECONDS:
                feed.stop()
                del self.feeds[wedding_id]
                if self.channel_name is not None:
                    task = asyncio.create_task(self.layer.group_discard(wedding_group(wedding_id), self.channel_name))
                    task.add_done_callback(_log_failure)

    def _route(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == LAYER_EVENT:
            feed = self.feeds.get(message["wedding"])
            if feed is not None:
                feed.inbox.put_nowait(message)
        elif kind == LAYER_CONTROL:
            for connection_id in list(self.sockets_by_user.get(message.get("user", -1), ())):
                socket = self.sockets.get(connection_id)
                if socket is not None:
                    socket.on_control(message)

    # --- sockets ------------------------------------------------------------------------------------

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
        for feed in self.feeds.values():
            feed.subscriptions.pop(socket.connection_id, None)

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
                head, _epoch = await database_sync_to_async(stream_head)(wedding_id=wedding_id)
                feed = self.feeds[wedding_id] = WeddingFeed(wedding_id=wedding_id, last_seq=head)
        self._feed_locks.pop(wedding_id, None)
        return feed

    async def subscribe(
        self,
        socket: Socket,
        *,
        topic: str,
        wedding_id: int,
        since: int | None,
        epoch: str | None,
        min_priority: Priority,
        membership: MembershipView | None = None,
        check: Callable[[], MembershipView] | None = None,
    ) -> tuple[MembershipView, Replay, Subscription]:
        """Attach ``socket`` to the wedding and read what it missed.

        The subscription holds live events from the moment it is attached; the replay is read
        after that, so every event is in the replay, among the held ones, or both, and
        :meth:`Subscription.go_live` sends each exactly once, in order.

        Pass the ``membership`` already checked, or a ``check`` (synchronous, raising when access
        is refused) to run in the same thread hop as the replay read: the subscription is then
        attached unconfirmed, holding every live event until the check says whose it is. Only for
        a wedding the socket's user belonged to at connect, so no feed is made for strangers.
        """
        if (membership is None) == (check is None):
            raise TypeError("pass exactly one of membership and check")
        try:
            feed = await self._feed(wedding_id)
        except Exception:
            if check is not None:  # a wedding deleted since connect has no stream to make: say so
                await database_sync_to_async(check)()
            raise
        subscription = Subscription(
            socket=socket,
            topic=topic,
            member_id=0 if membership is None else membership.member_id,
            role="" if membership is None else membership.role,
            min_priority=min_priority,
            cursor=since or 0,
            confirmed=membership is not None,
        )
        feed.subscriptions[socket.connection_id] = subscription
        try:
            membership, replay = await per_socket_db(_checked_replay)(
                membership=membership,
                check=check,
                wedding_id=wedding_id,
                since=since,
                epoch=epoch,
                min_priority=int(min_priority),
            )
        except BaseException:
            if feed.subscriptions.get(socket.connection_id) is subscription:
                del feed.subscriptions[socket.connection_id]
            raise
        subscription.confirm(membership)
        return membership, replay, subscription

    def unsubscribe(self, socket: Socket, *, wedding_id: int) -> bool:
        feed = self.feeds.get(wedding_id)
        return feed is not None and feed.subscriptions.pop(socket.connection_id, None) is not None

    def subscribed(self, socket: Socket, *, wedding_id: int) -> Subscription | None:
        feed = self.feeds.get(wedding_id)
        return None if feed is None else feed.subscriptions.get(socket.connection_id)

    async def control_broadcast(self, message: dict[str, Any]) -> None:
        """Tell every node (this one included) about something a socket of theirs must do."""
        await self.layer.group_send(NODES_GROUP, {"type": LAYER_CONTROL, **message})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for feed in self.feeds.values():
            feed.stop()
        with contextlib.suppress(Exception):
            if self.channel_name is not None:
                await self.layer.group_discard(NODES_GROUP, self.channel_name)
                for wedding_id in self.feeds:
                    await self.layer.group_discard(wedding_group(wedding_id), self.channel_name)


def _checked_replay(
    *,
    membership: MembershipView | None,
    check: Callable[[], MembershipView] | None,
    wedding_id: int,
    since: int | None,
    epoch: str | None,
    min_priority: int,
) -> tuple[MembershipView, Replay]:
    """The access check (when still to do) and the replay read, as one thread hop."""
    if membership is None:
        if check is None:
            raise TypeError("pass a membership or a check")
        membership = check()
    if membership.wedding_id != wedding_id:
        raise ValueError(f"membership of wedding {membership.wedding_id} used for wedding {wedding_id}")
    replay = events_replay(
        wedding_id=wedding_id,
        member_id=membership.member_id,
        role=membership.role,
        since=since,
        epoch=epoch,
        min_priority=min_priority,
    )
    return membership, replay


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("hub.background_failed", error=repr(task.exception()))


# One hub per event loop: a server process has one loop; tests start a fresh loop per test.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, NodeHub] = weakref.WeakKeyDictionary()


async def node_hub() -> NodeHub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = NodeHub()
    await hub.start()
    return hub


def node_control_send(message: dict[str, Any]) -> Callable[[], None]:
    """A callable for ``transaction.on_commit`` that tells every node about an access change."""

    def send() -> None:
        from asgiref.sync import async_to_sync

        try:
            async_to_sync(get_channel_layer().group_send)(NODES_GROUP, {"type": LAYER_CONTROL, **message})
        except Exception:
            logger.exception("hub.control_send_failed", kind=message.get("kind"))

    return send
