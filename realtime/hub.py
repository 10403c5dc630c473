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
import itertools
import os
import random
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, NamedTuple, Protocol

import msgspec
import structlog
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from presence.selectors import PresenceSnapshot, presence_location_visible, presence_snapshots
from presence.services import (
    Tell,
    presence_devices_join,
    presence_devices_leave,
    presence_entry,
    presence_heartbeat,
    presence_layer_message,
    presence_sweep,
)
from presence.state import DevicePresence
from presence.store import MemberChange, MemoryPresenceStore, ToldWire, presence_store
from realtime import daphne_support
from realtime.daphne_support import text_frame
from realtime.db import per_socket_db
from realtime.gc_policy import gc_freeze_loop
from realtime.layer_send import layer_group_send, node_loop_register, node_loop_unregister
from realtime.limits.devices import DEVICE_REFRESH_SECONDS
from realtime.limits.node import node_limits
from realtime.names import (
    LAYER_CONTROL,
    LAYER_EVENT,
    LAYER_PRESENCE,
    NODES_GROUP,
    Priority,
    wedding_group,
    wedding_topic,
)
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
from realtime.walks import in_slices
from wedsync.permissions import Permission, role_has_permission

logger = structlog.get_logger(__name__)

POLL_INTERVAL = 1.0
GROUP_RENEW_SECONDS = 60.0  # Pub/Sub group subscriptions (the core layer's follow its expiry)
IDLE_FEED_SECONDS = 60.0
RETRY_DELAY = 0.5
RECONCILE_SECONDS = 5.0
RESEND_SECONDS = 60.0  # an unacknowledged emergency or critical event is sent again this often
RESEND_WINDOW_SECONDS = 3600.0  # for this long after it was published
MAX_RESENDS = 5
HELD_MAX = 2000  # live events held for one subscription while its replay is sent
START_RETRY_SECONDS = 0.5  # a failed hub start is tried again after this, doubling up to the max
START_RETRY_MAX_SECONDS = 5.0

# The presence changes a node makes go out together, one channel-layer message to every node per
# window, whatever the number of weddings and changes in it; a node receiving one writes one frame
# per subscriber per wedding (a 2,000-member room would otherwise cost 2,000 frames per change).
PRESENCE_SEND_WINDOW_SECONDS = 0.05
PRESENCE_BATCH_MAX = 500  # entries per layer message (a reconnect storm's joins come in several)
PRESENCE_FLOOR_SECONDS = 2.0  # how long a new subscriber's snapshot versions filter its diffs
PRESENCE_LEAVE_DRAIN_SECONDS = 5.0  # how long a stopping node waits to tell its sockets' leaves
PRESENCE_RECONCILE_MEMBERS = 1000  # shown members per read of a reconciliation round

# (member, kind, role, state on the wire, version) of one member's presence change
PresenceEntry = tuple[int, str, str, dict[str, Any], int]


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """A subscribed device joining its wedding's presence; ``snapshot`` gets what it then sees."""

    device: DevicePresence
    snapshot: asyncio.Future[PresenceSnapshot | None]


# What a node asks of the presence store, in order: a join, or the leave of (wedding, member, device).
PresenceWork = PresenceJoin | tuple[int, int, str]


class Socket(Protocol):
    """What the hub needs of a connected socket (the consumer)."""

    connection_id: str
    user_id: int
    heartbeat_interval: int

    @property
    def token_generation(self) -> int:
        """The token generation the socket was authenticated with; a newer one revokes it."""
        ...

    @property
    def session_key(self) -> str | None:
        """The browser session the socket lives on, if it does: it ends with the session."""
        ...

    def heard_at(self) -> float:
        """When the client last sent anything (epoch seconds): a frame, a ping or a pong."""
        ...

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
    sees_presence: bool = False  # view_presence: gets presence_diff frames
    # Presence diffs held until the subscribe reply (with its snapshot) is on its way.
    presence_held: list[list[PresenceEntry]] | None = field(default_factory=list)
    present: bool = False  # its device counts in the wedding's presence (joined, leave not yet asked)
    # For a moment after the snapshot, diffs it already showed (member -> version) may still be on
    # their way from other nodes: those are not sent again.
    presence_floor: dict[int, int] | None = None
    presence_floor_until: float = 0.0
    heard_told: float = 0.0  # the last heartbeat time handed to the presence store
    device: DevicePresence | None = None  # the device as its socket last set it: what a rejoin restores

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
        self.sees_presence = role_has_permission(role=membership.role, permission=Permission.VIEW_PRESENCE)
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

    def presence_live(self, *, versions: dict[int, int]) -> None:
        """The reply with the presence snapshot (``versions``: member -> version shown) is queued:
        send the diffs held meanwhile that are newer than the snapshot, then diffs as they come."""
        held, self.presence_held = self.presence_held or [], None
        if not self.sees_presence:
            return
        self.presence_floor = versions
        self.presence_floor_until = time.monotonic() + PRESENCE_FLOOR_SECONDS
        self.presence_push([entry for batch in held for entry in batch])

    def presence_push(self, entries: list[PresenceEntry], frame: tuple[str, bytes] | None = None) -> None:
        """Send a batch of presence entries (``frame``: the batch already encoded for this role)."""
        floor = self.presence_floor
        if floor is not None:
            if time.monotonic() > self.presence_floor_until:
                self.presence_floor = floor = None
            else:
                fresh = [entry for entry in entries if entry[4] > floor.get(entry[0], 0)]
                if len(fresh) != len(entries):
                    entries, frame = fresh, None
        if not entries:
            return
        if frame is None:
            text = presence_diff_text(topic=self.topic, entries=_presence_merge(entries), viewer_role=self.role)
            self.socket.push_event(text, priority=Priority.NORMAL, topic=None, seq=None, conflate_key=None)
        else:
            self.socket.push_event(
                frame[0], priority=Priority.NORMAL, topic=None, seq=None, conflate_key=None, framed=frame[1]
            )


def _presence_merge(entries: list[PresenceEntry]) -> list[PresenceEntry]:
    """One entry per member, the newest state, its kind as the whole sequence reads to a client: a
    join stays a join until a leave; a leave followed by a join is an update."""
    merged: dict[int, PresenceEntry] = {}
    for entry in entries:
        previous = merged.get(entry[0])
        kind = entry[1]
        if previous is not None and kind != "leaves":
            kind = "joins" if previous[1] == "joins" else "updates" if previous[1] == "leaves" else kind
        merged[entry[0]] = (entry[0], kind, entry[2], entry[3], entry[4])
    return list(merged.values())


def presence_diff_text(*, topic: str, entries: list[PresenceEntry], viewer_role: str) -> str:
    """The ``presence_diff`` frame as ``viewer_role`` may see it (PROTOCOL.md section 4)."""
    frame: dict[str, Any] = {"op": "presence_diff", "topic": topic, "joins": {}, "leaves": {}, "updates": {}}
    for member_id, kind, role, state, _version in entries:
        if state.get("location") is not None and not presence_location_visible(
            viewer_role=viewer_role, subject_role=role
        ):
            state = {**state, "location": None}
        frame[kind][str(member_id)] = state
    return encode(frame)


_REPAIR = "repair"


class WeddingFeed:
    """One wedding's events on this node, in seq order, gaps repaired from the log."""

    def __init__(self, *, wedding_id: int, last_seq: int) -> None:
        self.wedding_id = wedding_id
        self.last_seq = last_seq
        self.subscriptions: dict[str, Subscription] = {}
        # Bounded: on Pub/Sub a node's backlog would otherwise pile up here, in its own memory,
        # where Redis's output-buffer limit never sees it (decision 0014). What does not fit is
        # dropped and read back from the log, like any other gap.
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=settings.REALTIME_FEED_INBOX_MAX)
        self.inbox_dropped = 0
        self.suspected_head = 0
        self.idle_since: float | None = None
        self.presence_versions: dict[int, int] = {}  # member -> newest version seen here
        # member -> (role, state as JSON) of members this node last told online: what a lost leave
        # leaves. Kept encoded: as dicts they were ~1.5 KB a member per feed, ~0.4 KB as text.
        self.presence_shown: dict[int, tuple[str, str]] = {}
        # member -> newest version a subscriber's snapshot showed here (reconciliation only: a diff
        # of that version may still be due to the subscribers that were here before)
        self.presence_snapshot_versions: dict[int, int] = {}
        self.presence_pending: list[PresenceEntry] = []
        self._presence_flush: asyncio.Handle | None = None
        self.task = asyncio.create_task(self._run(), name=f"feed-{wedding_id}")

    def offer(self, message: dict[str, Any]) -> None:
        """Queue an event for the feed's task, or drop it if the inbox is full: the next event's seq
        gap (or the heads poll, for a last one) has the feed read it from the log instead."""
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.inbox_dropped += 1
            if self.inbox_dropped == 1 or self.inbox_dropped % 1000 == 0:
                logger.warning(
                    "feed.inbox_full", wedding=self.wedding_id, seq=message.get("seq"), dropped=self.inbox_dropped
                )

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

    def presence_offer(self, message: dict[str, Any]) -> None:
        """A member's presence changed (from any node): batch it for this window's frame. Versions
        only grow, so a diff overtaken by a newer one on its way here is dropped."""
        member_id, version = message["member"], message["v"]
        if version <= self.presence_versions.get(member_id, 0):
            return
        self.presence_versions[member_id] = version
        if message["kind"] == "leaves":
            self.presence_shown.pop(member_id, None)
        else:
            self.presence_shown[member_id] = (message["role"], encode(message["state"]))
        self.presence_pending.append((member_id, message["kind"], message["role"], message["state"], version))
        if self._presence_flush is None:
            # The sender already batched its window: flush once this layer message is read.
            self._presence_flush = asyncio.get_running_loop().call_soon(self.presence_flush)

    def presence_seed(self, *, members: dict[str, dict[str, Any]], versions: dict[int, int]) -> None:
        """What a new subscriber's snapshot showed, so reconciliation neither repeats it as joins
        nor misses the leave of a member that no diff here ever named."""
        for member_id, version in versions.items():
            if version > self.presence_snapshot_versions.get(member_id, 0):
                self.presence_snapshot_versions[member_id] = version
        shown = self.presence_shown
        for member, state in members.items():
            if int(member) not in shown:  # most are shown already: encode only the new ones
                shown[int(member)] = (state["role"], encode(state))

    def presence_reconcile(self, *, told: list[ToldWire], read_at_ms: int) -> int:
        """Repair diffs this node missed (the layer drops messages at capacity; a send can fail):
        ``told`` is the store's state read at ``read_at_ms``. Newer states are offered as diffs;
        members shown online that the store no longer has leave, unless a diff about them came
        after the read. Returns how many repairs were offered."""
        repaired = 0
        present = set()
        for entry in told:
            present.add(entry.member_id)
            known = max(
                self.presence_versions.get(entry.member_id, 0), self.presence_snapshot_versions.get(entry.member_id, 0)
            )
            if entry.version > known:
                kind = "updates" if entry.member_id in self.presence_shown else "joins"
                self.presence_offer(
                    {
                        "member": entry.member_id,
                        "kind": kind,
                        "role": entry.role,
                        "state": entry.wire,
                        "v": entry.version,
                    }
                )
                repaired += 1
        for member_id, (role, shown_state) in list(self.presence_shown.items()):
            known = max(self.presence_versions.get(member_id, 0), self.presence_snapshot_versions.get(member_id, 0))
            if member_id not in present and known < read_at_ms:
                gone = {**msgspec.json.decode(shown_state), "status": "offline", "devices": 0}
                self.presence_offer(
                    {"member": member_id, "kind": "leaves", "role": role, "state": gone, "v": read_at_ms}
                )
                repaired += 1
        return repaired

    def presence_flush(self) -> None:
        self._presence_flush = None
        entries, self.presence_pending = _presence_merge(self.presence_pending), []
        if not entries:
            return
        topic = wedding_topic(self.wedding_id)
        frames: dict[str, tuple[str, bytes]] = {}  # viewer role -> frame, built once per role
        for subscription in list(self.subscriptions.values()):
            if subscription.presence_held is not None:
                subscription.presence_held.append(entries)
                continue
            if not subscription.sees_presence:
                continue
            frame = frames.get(subscription.role)
            if frame is None:
                text = presence_diff_text(topic=topic, entries=entries, viewer_role=subscription.role)
                frame = frames[subscription.role] = (text, text_frame(text.encode()))
            subscription.presence_push(entries, frame)

    def stop(self) -> None:
        self.task.cancel()
        if self._presence_flush is not None:
            self._presence_flush.cancel()


class Subscribed(NamedTuple):
    membership: MembershipView
    replay: Replay
    subscription: Subscription


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
        self._start_task: asyncio.Task[None] | None = None
        self._start_failures = 0
        self._regroup = False
        self._presence_work: list[PresenceWork] = []
        self._presence_working: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._presence_outgoing: list[dict[str, Any]] = []
        self._presence_send: asyncio.TimerHandle | None = None

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
                # Every subscribe's thread hop reads the database and writes presence; with asyncio's
                # default of cores + 4 threads a 2,000-socket reconnect storm queued handshakes past
                # daphne's 5 s limit and clients spent the storm backing off (docs/benchmarks.md).
                self._loop.set_default_executor(
                    ThreadPoolExecutor(max_workers=settings.REALTIME_THREAD_POOL, thread_name_prefix="node-pool")
                )
        if self.channel_name is None:
            self.channel_name = await self.layer.new_channel(prefix="node")
        await self.layer.group_add(NODES_GROUP, self.channel_name)
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="hub-receive"),
            asyncio.create_task(self._poll_loop(), name="hub-poll"),
            asyncio.create_task(self._access_loop(), name="hub-access"),
            asyncio.create_task(self._presence_loop(), name="hub-presence"),
            asyncio.create_task(self._presence_reconcile_loop(), name="hub-presence-reconcile"),
        ]
        if settings.REALTIME_GC_FREEZE_SECONDS:
            freeze = gc_freeze_loop(
                freeze_every=settings.REALTIME_GC_FREEZE_SECONDS, full_every=settings.REALTIME_GC_FULL_SECONDS
            )
            self._tasks.append(asyncio.create_task(freeze, name="hub-gc"))
        node_loop_register(self._loop)
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
            try:
                self._route(message)
            except Exception:  # one bad message must not end the node's receiving
                logger.exception("hub.route_failed", type=message.get("type"))

    async def _join_groups(self) -> None:
        await self.layer.group_add(NODES_GROUP, self._channel)
        for wedding_id in list(self.feeds):
            await self.layer.group_add(wedding_group(wedding_id), self._channel)
        self._regroup = False

    async def _poll_loop(self) -> None:
        """The node's housekeeping, once a second: find events the layer never delivered (a dropped
        last event, a Redis restart), re-send unacknowledged emergencies, keep device entries and
        group memberships alive, and close feeds nobody uses."""
        loop = asyncio.get_running_loop()
        # Core: renew memberships before they expire. Pub/Sub has no expiry; renewing still repairs
        # a subscription that a late group_discard of the same wedding removed, at no cost otherwise.
        expiry = getattr(self.layer, "group_expiry", None)
        refresh_every = max(expiry / 3, 30) if expiry else GROUP_RENEW_SECONDS
        next_refresh = loop.time() + refresh_every
        next_device_refresh = loop.time() + DEVICE_REFRESH_SECONDS
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
                            with contextlib.suppress(asyncio.QueueFull):  # full: its gaps repair it
                                feed.inbox.put_nowait({"type": _REPAIR, "upto": feed.suspected_head})
                        feed.suspected_head = head
                self._close_idle_feeds(loop.time())
                if loop.time() >= next_resend:
                    await self._resend_unacknowledged()
                    next_resend = loop.time() + RESEND_SECONDS
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

    async def _access_loop(self) -> None:
        """Every RECONCILE_SECONDS, the access check: a task of its own, since it needs only the
        database and must keep its pace when the housekeeping's Redis steps wait on a Redis that
        does not answer (the very moment revocation messages get lost)."""
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                await self._reconcile_access()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub.access_check_failed")

    async def _presence_loop(self) -> None:
        """Every few seconds: hand the heartbeats heard since the last round to the presence store
        in one batch (which also says this node is alive; devices it had counted gone join
        again), and, embedded, sweep the devices that stopped answering (a Celery beat task does
        it where presence is in Redis)."""
        every = settings.REALTIME_PRESENCE_FLUSH_SECONDS
        embedded = isinstance(presence_store(), MemoryPresenceStore)
        while True:
            try:
                seen = await self._presence_heard()
                await sync_to_async(presence_heartbeat, thread_sensitive=False)(
                    node=settings.REALTIME_NODE_NAME,
                    seen=seen,
                    node_ttl=settings.REALTIME_PRESENCE_NODE_TTL,
                    tell=self.presence_tell,
                    still_present=self._presence_still_present,
                )
                if embedded:
                    await sync_to_async(presence_sweep, thread_sensitive=False)(tell=self.presence_tell_many)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: deadlines are generous enough to wait for it
                logger.exception("hub.presence_failed")
            await asyncio.sleep(every)

    async def _presence_reconcile_loop(self) -> None:
        """Every REALTIME_PRESENCE_RECONCILE_SECONDS: compare what each feed has shown with the
        store, so a lost diff is repaired within that, not at the member's next change."""
        while True:
            await asyncio.sleep(settings.REALTIME_PRESENCE_RECONCILE_SECONDS)
            # A round of its own, so that what it read is freed before the sleep: held over it, the
            # store's decoded states were ~1.2 KB per idle socket (tracemalloc, 200-member weddings).
            try:
                await self._presence_reconcile_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round (a feed's state, a store reply) must not end the repairs
                logger.exception("hub.presence_reconcile_round_failed")

    async def _presence_reconcile_round(self) -> None:
        weddings = [
            wedding_id
            for wedding_id, feed in self.feeds.items()
            if any(subscription.sees_presence for subscription in feed.subscriptions.values())
        ]
        repaired = 0
        for part in self._reconcile_parts(weddings):
            try:
                read_at_ms = int(time.time() * 1000)
                told = await sync_to_async(_presence_told, thread_sensitive=False)(part)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the next round tries again
                logger.exception("hub.presence_reconcile_failed")
                return
            for wedding_id, entries in told.items():
                feed = self.feeds.get(wedding_id)
                if feed is not None:
                    repaired += feed.presence_reconcile(told=entries, read_at_ms=read_at_ms)
        if repaired:
            logger.warning("hub.presence_repaired", entries=repaired)

    def _reconcile_parts(self, weddings: list[int]) -> list[list[int]]:
        """The weddings in parts of about PRESENCE_RECONCILE_MEMBERS shown members each. Read in
        one hop, 50 weddings of 200 held the GIL for 110-130 ms decoding 10,000 states while the
        loop waited (a loop-lag trace of the Saturday peak): every delivery due then waited too."""
        parts: list[list[int]] = [[]]
        members = 0
        for wedding_id in weddings:
            feed = self.feeds.get(wedding_id)
            size = 0 if feed is None else len(feed.presence_shown)
            if parts[-1] and members + size > PRESENCE_RECONCILE_MEMBERS:
                parts.append([])
                members = 0
            parts[-1].append(wedding_id)
            members += size
        return [part for part in parts if part]

    async def _presence_heard(self) -> list[DevicePresence]:
        """The devices heard from since the last round, walked a slice at a time (realtime.walks);
        one that leaves meanwhile is filtered out by ``_presence_still_present``."""
        seen = []
        node = settings.REALTIME_NODE_NAME
        subscriptions = [subscription for feed in self.feeds.values() for subscription in feed.subscriptions.values()]
        async for part in in_slices(subscriptions):
            now = time.monotonic()
            for subscription in part:
                if subscription.presence_floor is not None and now > subscription.presence_floor_until:
                    # A member -> version map of the whole room: ~10 KB a socket if kept while idle.
                    subscription.presence_floor = None
                if not subscription.present:
                    continue
                heard = subscription.socket.heard_at()
                if heard > subscription.heard_told:
                    subscription.heard_told = heard
                    if subscription.device is not None:
                        seen.append(replace(subscription.device, last_seen=heard, node=node))
        return seen

    def _presence_still_present(self, device: DevicePresence) -> bool:
        """Whether the device's subscription is still here (its socket may have left meanwhile)."""
        feed = self.feeds.get(device.wedding_id)
        subscription = None if feed is None else feed.subscriptions.get(device.device)
        return subscription is not None and subscription.present

    def presence_seed(self, *, wedding_id: int, snapshot: PresenceSnapshot) -> None:
        feed = self.feeds.get(wedding_id)
        if feed is not None:
            feed.presence_seed(members=snapshot.wire.get("members", {}), versions=snapshot.versions)

    def presence_tell(self, change: MemberChange) -> None:
        """From any thread: queue a presence change for this node's next batch to every node."""
        entry = presence_entry(change)
        if entry is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._presence_queue, [entry])

    def presence_tell_many(self, changes: list[MemberChange]) -> None:
        entries = [entry for change in changes if (entry := presence_entry(change)) is not None]
        if entries and self._loop is not None:
            self._loop.call_soon_threadsafe(self._presence_queue, entries)

    def _presence_queue(self, entries: list[dict[str, Any]]) -> None:
        self._presence_outgoing += entries
        if self._presence_send is None and self._loop is not None:
            self._presence_send = self._loop.call_later(PRESENCE_SEND_WINDOW_SECONDS, self._presence_send_now)

    def _presence_send_now(self) -> asyncio.Task[None] | None:
        self._presence_send = None
        batch, self._presence_outgoing = self._presence_outgoing, []
        if not batch:
            return None
        task = asyncio.create_task(self._presence_send_batch(batch), name="hub-presence-send")
        task.add_done_callback(_log_failure)
        return task

    async def _presence_send_batch(self, batch: list[dict[str, Any]]) -> None:
        for start in range(0, len(batch), PRESENCE_BATCH_MAX):
            try:
                await self.layer.group_send(
                    NODES_GROUP, presence_layer_message(batch[start : start + PRESENCE_BATCH_MAX])
                )
            except Exception:  # presence heals with the next change of each member, or a snapshot
                logger.exception("hub.presence_send_failed", entries=len(batch))

    async def presence_join(self, device: DevicePresence) -> PresenceSnapshot | None:
        """The device joins its wedding's presence; returns the snapshot its viewer role sees, read
        after the join (None when the store is away: the heartbeat joins it again later).

        Joins and leaves queue up while the store works on the previous batch and go in the next,
        so a reconnect storm's thousands cost a few round trips and one snapshot read per wedding
        per batch, not four round trips and a snapshot each."""
        snapshot: asyncio.Future[PresenceSnapshot | None] = asyncio.get_running_loop().create_future()
        self._presence_queue_work(PresenceJoin(device, snapshot))
        return await snapshot

    def presence_leave(self, subscription: Subscription, *, wedding_id: int) -> None:
        """The subscription's device leaves the wedding's presence (batched, in the background)."""
        if not subscription.present:
            return
        subscription.present = False
        self._presence_queue_work((wedding_id, subscription.member_id, subscription.socket.connection_id))

    def _presence_queue_work(self, work: PresenceWork) -> None:
        self._presence_work.append(work)
        if self._presence_working is None or self._presence_working.done():
            self._presence_working = asyncio.create_task(self._presence_work_all(), name="hub-presence-work")

    async def _presence_work_all(self) -> None:
        while self._presence_work:
            batch, self._presence_work = self._presence_work, []
            # In order: a device's leave queued after its join must not be applied before it.
            for joining, run in itertools.groupby(batch, key=lambda work: isinstance(work, PresenceJoin)):
                if joining:
                    await self._presence_joins([work for work in run if isinstance(work, PresenceJoin)])
                else:
                    leaves = [work for work in run if not isinstance(work, PresenceJoin)]
                    try:
                        await sync_to_async(presence_devices_leave, thread_sensitive=False)(
                            devices=leaves, tell=self.presence_tell
                        )
                    except Exception:  # their deadlines pass and the sweep tells the leaves instead
                        logger.exception("hub.presence_leave_failed", devices=len(leaves))

    async def _presence_joins(self, joins: list[PresenceJoin]) -> None:
        try:
            snapshots = await sync_to_async(_presence_join_batch, thread_sensitive=False)(
                [join.device for join in joins], tell=self.presence_tell
            )
        except Exception:
            logger.exception("hub.presence_join_failed", devices=len(joins))
            snapshots = None
        for join in joins:
            if join.snapshot.done():  # its subscribe was cancelled (the socket went): leave again
                self._presence_work.append((join.device.wedding_id, join.device.member_id, join.device.device))
            elif snapshots is None:
                join.snapshot.set_result(None)
            else:
                join.snapshot.set_result(snapshots.get((join.device.wedding_id, join.device.role)))

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
        # Likewise the sockets: one that connects during the read was checked at its connect, and
        # its session (not among those read) must not be taken for one that ended.
        sockets = list(self.sockets.values())
        if not checked and not sockets:
            return
        snapshot = await database_sync_to_async(access_snapshot)(
            member_ids=sorted({subscription.member_id for _f, _c, subscription in checked}),
            user_ids=sorted({socket.user_id for socket in sockets}),
            session_keys=sorted({key for socket in sockets if (key := socket.session_key) is not None}),
        )
        members = snapshot.members
        async for part in in_slices(checked):
            for feed, connection_id, subscription in part:
                if feed.subscriptions.get(connection_id) is not subscription:
                    continue  # gone or replaced since the read
                state = members.get(subscription.member_id)
                expected = (subscription.role, feed.wedding_id, subscription.socket.user_id, True)
                if state != expected:
                    reason = "removed" if state is None else "deactivated" if not state[3] else "role_changed"
                    control = {"kind": "member_changed", "wedding": feed.wedding_id, "reason": reason}
                    subscription.socket.on_control(control)
        async for sockets_part in in_slices(sockets):
            for socket in sockets_part:
                if self.sockets.get(socket.connection_id) is not socket:
                    continue  # gone since the read
                generation = snapshot.generations.get(socket.user_id, 0)
                if socket.user_id in snapshot.inactive_users:
                    socket.on_control({"kind": "access_ended", "reason": "deactivated"})
                elif generation > socket.token_generation:
                    socket.on_control({"kind": "tokens_revoked", "generation": generation})
                elif socket.session_key is not None and socket.session_key not in snapshot.live_sessions:
                    socket.on_control({"kind": "access_ended", "reason": "session_ended"})

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
                feed.offer(message)
        elif kind == LAYER_PRESENCE:
            for entry in message["entries"]:
                feed = self.feeds.get(entry["wedding"])
                if feed is not None:
                    feed.presence_offer(entry)
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
            subscription = feed.subscriptions.pop(socket.connection_id, None)
            if subscription is not None:
                self.presence_leave(subscription, wedding_id=feed.wedding_id)

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
    ) -> Subscribed:
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
            membership, replay = await _checked_replay_hop(
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
        return Subscribed(membership, replay, subscription)

    def unsubscribe(self, socket: Socket, *, wedding_id: int) -> bool:
        feed = self.feeds.get(wedding_id)
        subscription = None if feed is None else feed.subscriptions.pop(socket.connection_id, None)
        if subscription is None:
            return False
        self.presence_leave(subscription, wedding_id=wedding_id)
        return True

    def subscribed(self, socket: Socket, *, wedding_id: int) -> Subscription | None:
        feed = self.feeds.get(wedding_id)
        return None if feed is None else feed.subscriptions.get(socket.connection_id)

    def control_broadcast(self, message: dict[str, Any]) -> None:
        """Tell every node (this one included) about something a socket of theirs must do."""
        layer_group_send(NODES_GROUP, {"type": LAYER_CONTROL, **message})

    async def stop(self) -> None:
        if self._start_task is not None:
            self._start_task.cancel()
        if self._loop is not None:
            node_loop_unregister(self._loop)
        for task in self._tasks:
            task.cancel()
        if self._presence_working is not None and not self._presence_working.done():
            # Sockets closed by a drain leave presence now rather than when the node's liveness
            # runs out (REALTIME_PRESENCE_NODE_TTL); bounded, a stuck Redis must not hold the exit.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._presence_working), PRESENCE_LEAVE_DRAIN_SECONDS)
        if self._presence_send is not None:
            self._presence_send.cancel()
        sending = self._presence_send_now()  # what is still queued goes out now
        if sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(sending), PRESENCE_LEAVE_DRAIN_SECONDS)
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


_checked_replay_hop = per_socket_db(_checked_replay)  # wrapped once (realtime.db)


def _presence_told(weddings: list[int]) -> dict[int, list[ToldWire]]:
    return presence_store().told_wire(wedding_ids=weddings, now=time.time())


def _presence_join_batch(
    devices: list[DevicePresence], *, tell: Tell
) -> dict[tuple[int, str], PresenceSnapshot] | None:
    """Join the devices, then read the snapshots their viewer roles see (so each includes them).
    Raises when the join failed; None when only the snapshots did."""
    presence_devices_join(devices=devices, tell=tell)
    try:
        return presence_snapshots(wanted=[(device.wedding_id, device.role) for device in devices])
    except Exception:
        logger.exception("hub.presence_snapshot_failed", devices=len(devices))
        return None


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
    if not daphne_support.installed():
        return None
    for _attempt in range(3):  # the loop's thread may add a hub while this one reads
        try:
            hubs = list(_hubs.values())
            break
        except RuntimeError:
            continue
    else:
        hubs = []
    if not hubs:
        return "the socket hub has not started"
    if not all(hub.running for hub in hubs):
        return "the socket hub is not running yet (is the channel layer's Redis reachable?)"
    return None


def node_control_send(message: dict[str, Any]) -> Callable[[], None]:
    """A callable for ``transaction.on_commit`` that tells every node about an access change
    (without waiting for Redis: each node's access reconciliation catches a lost one)."""

    def send() -> None:
        layer_group_send(NODES_GROUP, {"type": LAYER_CONTROL, **message})

    return send
