"""Presence on this node: what its subscribers are shown, and what its sockets tell the store.

:class:`NodePresence` is owned by the node hub. It batches the changes this process makes into one
layer message per window to every node, takes every node's batches into per-wedding
:class:`FeedPresence` state (versions only grow, so a diff overtaken on its way is dropped) and
writes one ``presence_diff`` frame per viewer role per wedding. Joins and leaves of devices queue
up while the store works on the previous batch. Every few seconds the heartbeats heard go to the
store in one batch, and each wedding's shown state is reconciled with the store, so a lost diff
is repaired within that.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings

from monitoring.metrics import PRESENCE_CHANGES, PRESENCE_LATENCY
from presence.selectors import PresenceSnapshot, presence_snapshots
from presence.services import (
    PresenceRefused,
    Tell,
    presence_device_rtt,
    presence_devices_join,
    presence_devices_leave,
    presence_entry,
    presence_heartbeat,
    presence_state_set,
    presence_sweep,
)
from presence.state import DevicePresence, StateChange
from presence.store import MemberChange, MemoryPresenceStore, ToldWire, presence_store
from realtime.db import per_socket_db
from realtime.messages import PresenceBatch, PresenceEntry, layer_encode
from realtime.node.presence_diffs import FeedPresence, Viewer
from realtime.node.socket import Socket
from realtime.walks import in_slices
from wedsync.services.audit import ClientInfo

logger = structlog.get_logger(__name__)

# A node's changes go out together, one layer message to every node per window whatever the number
# of weddings and changes in it; a receiving node writes one frame per subscriber per wedding.
SEND_WINDOW_SECONDS = 0.05
BATCH_MAX = 500  # entries per layer message (a reconnect storm's joins come in several)
LEAVE_DRAIN_SECONDS = 5.0  # how long a stopping node waits to tell its sockets' leaves
RECONCILE_MEMBERS = 1000  # shown members per read of a reconciliation round

_presence_state_set = per_socket_db(presence_state_set)  # wrapped once (realtime.db)


@dataclass(frozen=True, slots=True)
class _Join:
    """A subscribed device joining its wedding's presence; ``snapshot`` gets what it then sees."""

    device: DevicePresence
    snapshot: asyncio.Future[PresenceSnapshot | None]


# What the node asks of the store, in order: a join, or the leave of (wedding, member, device).
_Work = _Join | tuple[int, int, str]


class NodePresence:
    """This node's presence work; one per hub, which calls it as sockets come, go and subscribe."""

    def __init__(self, *, send_batch: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._send_batch = send_batch  # hands one encoded layer message to every node
        self.feeds: dict[int, FeedPresence] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._work: list[_Work] = []
        self._working: asyncio.Task[None] | None = None
        self._outgoing: list[PresenceEntry] = []
        self._send: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[None]]:
        self._loop = loop
        return [
            asyncio.create_task(self.heartbeat_loop(), name="hub-presence"),
            asyncio.create_task(self.reconcile_loop(), name="hub-presence-reconcile"),
        ]

    # --- weddings and viewers ------------------------------------------------------------------------

    def feed_open(self, wedding_id: int) -> None:
        self.feeds.setdefault(wedding_id, FeedPresence(wedding_id))

    def feed_close(self, wedding_id: int) -> None:
        feed = self.feeds.pop(wedding_id, None)
        if feed is not None:
            feed.stop()

    def attach(self, *, wedding_id: int, socket: Socket, topic: str) -> Viewer:
        """A subscription being made: its viewer holds diffs until its reply is on its way."""
        viewer = Viewer(socket=socket, topic=topic)
        self.feeds.setdefault(wedding_id, FeedPresence(wedding_id)).viewers[socket.connection_id] = viewer
        return viewer

    def viewer(self, *, wedding_id: int, connection_id: str) -> Viewer | None:
        feed = self.feeds.get(wedding_id)
        return None if feed is None else feed.viewers.get(connection_id)

    def detach(self, viewer: Viewer, *, wedding_id: int) -> None:
        """The subscription ended: its device leaves the wedding's presence (batched, later)."""
        feed = self.feeds.get(wedding_id)
        if feed is not None and feed.viewers.get(viewer.socket.connection_id) is viewer:
            del feed.viewers[viewer.socket.connection_id]
        self.leave(viewer, wedding_id=wedding_id)

    def leave(self, viewer: Viewer, *, wedding_id: int) -> None:
        if not viewer.present:
            return
        viewer.present = False
        self._queue_work((wedding_id, viewer.member_id, viewer.socket.connection_id))

    def offer(self, entry: PresenceEntry) -> None:
        feed = self.feeds.get(entry.wedding)
        if feed is not None:
            # A change's version is when it happened, in ms (presence/store.py): its age is the propagation.
            PRESENCE_LATENCY.observe(max(0.0, time.time() - entry.v / 1000))
            feed.offer(entry)

    async def join(self, viewer: Viewer, *, wedding_id: int) -> PresenceSnapshot | None:
        """The viewer's device joins the wedding's presence; returns the snapshot its role sees,
        read after the join (None when the store is away: the heartbeat joins it again later).

        Joins and leaves queue up while the store works on the previous batch and go in the next,
        so a reconnect storm's thousands cost a few round trips and one snapshot read per wedding
        per batch, not four round trips and a snapshot each."""
        socket = viewer.socket
        device = DevicePresence(
            wedding_id=wedding_id,
            member_id=viewer.member_id,
            role=viewer.role,
            device=socket.connection_id,
            node=settings.REALTIME_NODE_NAME,
            heartbeat_interval=socket.heartbeat_interval,
            last_seen=socket.heard_at(),
            client_device=socket.client_device,
            reconnects=socket.reconnects,
        )
        snapshot: asyncio.Future[PresenceSnapshot | None] = asyncio.get_running_loop().create_future()
        self._queue_work(_Join(device, snapshot))
        result = await snapshot
        # Present even if the store was away: its heartbeat joins it again, its close tells the leave.
        viewer.present, viewer.device = True, device
        return result

    async def look(self, viewer: Viewer, *, wedding_id: int) -> PresenceSnapshot | None:
        """The snapshot the viewer's role sees, without its device joining (an observer's: a
        coordinator watching a board is nobody's presence). None when the store is away."""
        try:
            snapshots = await sync_to_async(presence_snapshots, thread_sensitive=False)(
                wanted=[(wedding_id, viewer.role)]
            )
        except Exception:
            logger.exception("hub.presence_snapshot_failed", devices=0)
            return None
        return snapshots.get((wedding_id, viewer.role))

    def show(self, viewer: Viewer, *, wedding_id: int, snapshot: PresenceSnapshot | None) -> None:
        """The subscribe reply carrying ``snapshot`` is queued: diffs flow to the viewer from now."""
        viewer.live(versions={} if snapshot is None else snapshot.versions)
        feed = self.feeds.get(wedding_id)
        if snapshot is not None and feed is not None:
            feed.seed(members=snapshot.wire.get("members", {}), versions=snapshot.versions)

    # --- what sockets set ----------------------------------------------------------------------------

    async def state_set(
        self, socket: Socket, *, wedding_id: int, state: StateChange, client: ClientInfo, user_id: int
    ) -> None:
        """The ``presence`` op: raises :class:`PresenceRefused` when the device is not present."""
        viewer = self.viewer(wedding_id=wedding_id, connection_id=socket.connection_id)
        if viewer is None or not viewer.present:
            raise PresenceRefused(code="unavailable", message="Presence is unavailable: subscribe again.")
        await _presence_state_set(
            wedding_id=wedding_id,
            member_id=viewer.member_id,
            role=viewer.role,
            user_id=user_id,
            device=socket.connection_id,
            state=state,
            client=client,
            tell=self.tell,
        )
        if viewer.device is not None:  # what a rejoin after a long silence restores
            viewer.device = state.apply(viewer.device, now=time.time())

    async def device_rtt(self, socket: Socket, *, rtt_ms: int) -> bool:
        """Store the socket's measured round trip in each wedding it is present in; False when the
        store was away (the next heartbeat tries again)."""
        present = [
            (wedding_id, viewer)
            for wedding_id, feed in list(self.feeds.items())
            if (viewer := feed.viewers.get(socket.connection_id)) is not None and viewer.present
        ]
        for wedding_id, viewer in present:
            try:
                await sync_to_async(presence_device_rtt, thread_sensitive=False)(
                    wedding_id=wedding_id,
                    member_id=viewer.member_id,
                    device=socket.connection_id,
                    rtt_ms=rtt_ms,
                    tell=self.tell,
                )
            except Exception:
                logger.warning("socket.presence_rtt_failed", connection=socket.connection_id)
                return False
            if viewer.device is not None:
                viewer.device = replace(viewer.device, rtt_ms=rtt_ms)
        return True

    # --- telling every node --------------------------------------------------------------------------

    def tell(self, change: MemberChange) -> None:
        """From any thread: queue a change for this node's next batch to every node."""
        entry = presence_entry(change)
        if entry is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue, [entry])

    def tell_many(self, changes: list[MemberChange]) -> None:
        entries = [entry for change in changes if (entry := presence_entry(change)) is not None]
        if entries and self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue, entries)

    def _queue(self, entries: list[PresenceEntry]) -> None:
        for entry in entries:
            PRESENCE_CHANGES.labels(entry.kind).inc()
        self._outgoing += entries
        if self._send is None and self._loop is not None:
            self._send = self._loop.call_later(SEND_WINDOW_SECONDS, self._send_now)

    def _send_now(self) -> asyncio.Task[None] | None:
        self._send = None
        batch, self._outgoing = self._outgoing, []
        if not batch:
            return None
        task = asyncio.create_task(self._send_in_parts(batch), name="hub-presence-send")
        task.add_done_callback(_log_failure)
        return task

    async def _send_in_parts(self, batch: list[PresenceEntry]) -> None:
        for start in range(0, len(batch), BATCH_MAX):
            try:
                await self._send_batch(layer_encode(PresenceBatch(entries=batch[start : start + BATCH_MAX])))
            except Exception:  # presence heals with the next change of each member, or a snapshot
                logger.exception("hub.presence_send_failed", entries=len(batch))

    # --- the store's work queue ----------------------------------------------------------------------

    def _queue_work(self, work: _Work) -> None:
        self._work.append(work)
        if self._working is None or self._working.done():
            self._working = asyncio.create_task(self._work_all(), name="hub-presence-work")

    async def _work_all(self) -> None:
        while self._work:
            batch, self._work = self._work, []
            # In order: a device's leave queued after its join must not be applied before it.
            for joining, run in itertools.groupby(batch, key=lambda work: isinstance(work, _Join)):
                if joining:
                    await self._joins([work for work in run if isinstance(work, _Join)])
                else:
                    leaves = [work for work in run if not isinstance(work, _Join)]
                    try:
                        await sync_to_async(presence_devices_leave, thread_sensitive=False)(
                            devices=leaves, tell=self.tell
                        )
                    except Exception:  # their deadlines pass and the sweep tells the leaves instead
                        logger.exception("hub.presence_leave_failed", devices=len(leaves))

    async def _joins(self, joins: list[_Join]) -> None:
        try:
            snapshots = await sync_to_async(_join_batch, thread_sensitive=False)(
                [join.device for join in joins], tell=self.tell
            )
        except Exception:
            logger.exception("hub.presence_join_failed", devices=len(joins))
            snapshots = None
        for join in joins:
            if join.snapshot.done():  # its subscribe was cancelled (the socket went): leave again
                self._work.append((join.device.wedding_id, join.device.member_id, join.device.device))
            elif snapshots is None:
                join.snapshot.set_result(None)
            else:
                join.snapshot.set_result(snapshots.get((join.device.wedding_id, join.device.role)))

    # --- loops ---------------------------------------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        """Every few seconds: hand the heartbeats heard since the last round to the store in one
        batch (which also says this node is alive; devices it had counted gone join again), and,
        embedded, sweep the devices that stopped answering (a Celery beat task does it where
        presence is in Redis)."""
        every = settings.REALTIME_PRESENCE_FLUSH_SECONDS
        embedded = isinstance(presence_store(), MemoryPresenceStore)
        while True:
            try:
                seen = await self._heard()
                await sync_to_async(presence_heartbeat, thread_sensitive=False)(
                    node=settings.REALTIME_NODE_NAME,
                    seen=seen,
                    node_ttl=settings.REALTIME_PRESENCE_NODE_TTL,
                    tell=self.tell,
                    still_present=self._still_present,
                )
                if embedded:
                    await sync_to_async(presence_sweep, thread_sensitive=False)(tell=self.tell_many)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: deadlines are generous enough to wait for it
                logger.exception("hub.presence_failed")
            await asyncio.sleep(every)

    async def _heard(self) -> list[DevicePresence]:
        """The devices heard from since the last round, walked a slice at a time (realtime.walks);
        one that leaves meanwhile is filtered out by ``_still_present``."""
        seen = []
        node = settings.REALTIME_NODE_NAME
        viewers = [viewer for feed in self.feeds.values() for viewer in feed.viewers.values()]
        async for part in in_slices(viewers):
            now = time.monotonic()
            for viewer in part:
                if viewer.floor is not None and now > viewer.floor_until:
                    viewer.floor = None  # a member -> version map of the whole room: not kept while idle
                if not viewer.present:
                    continue
                heard = viewer.socket.heard_at()
                if heard > viewer.heard_told:
                    viewer.heard_told = heard
                    if viewer.device is not None:
                        seen.append(replace(viewer.device, last_seen=heard, node=node))
        return seen

    def _still_present(self, device: DevicePresence) -> bool:
        """Whether the device's viewer is still here (its socket may have left meanwhile)."""
        viewer = self.viewer(wedding_id=device.wedding_id, connection_id=device.device)
        return viewer is not None and viewer.present

    async def reconcile_loop(self) -> None:
        """Every REALTIME_PRESENCE_RECONCILE_SECONDS: compare what each wedding has shown with the
        store, so a lost diff is repaired within that, not at the member's next change."""
        while True:
            await asyncio.sleep(settings.REALTIME_PRESENCE_RECONCILE_SECONDS)
            # A round of its own, so that what it read is freed before the sleep (decision 0016).
            try:
                await self.reconcile_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round (a feed's state, a store reply) must not end the repairs
                logger.exception("hub.presence_reconcile_round_failed")

    async def reconcile_round(self) -> None:
        weddings = [
            wedding_id
            for wedding_id, feed in self.feeds.items()
            if any(viewer.sees for viewer in feed.viewers.values())
        ]
        repaired = 0
        for part in self._reconcile_parts(weddings):
            try:
                read_at_ms = int(time.time() * 1000)
                told = await sync_to_async(_told, thread_sensitive=False)(part)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the next round tries again
                logger.exception("hub.presence_reconcile_failed")
                return
            for wedding_id, entries in told.items():
                feed = self.feeds.get(wedding_id)
                if feed is not None:
                    repaired += feed.reconcile(told=entries, read_at_ms=read_at_ms)
        if repaired:
            logger.warning("hub.presence_repaired", entries=repaired)

    def _reconcile_parts(self, weddings: list[int]) -> list[list[int]]:
        """The weddings in parts of about RECONCILE_MEMBERS shown members each: one read of a busy
        node's every wedding held the loop for its decoding (decision 0016)."""
        parts: list[list[int]] = [[]]
        members = 0
        for wedding_id in weddings:
            feed = self.feeds.get(wedding_id)
            size = 0 if feed is None else len(feed.shown)
            if parts[-1] and members + size > RECONCILE_MEMBERS:
                parts.append([])
                members = 0
            parts[-1].append(wedding_id)
            members += size
        return [part for part in parts if part]

    async def stop(self) -> None:
        if self._working is not None and not self._working.done():
            # Sockets closed by a drain leave presence now rather than when the node's liveness
            # runs out (REALTIME_PRESENCE_NODE_TTL); bounded, a stuck Redis must not hold the exit.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._working), LEAVE_DRAIN_SECONDS)
        if self._send is not None:
            self._send.cancel()
        sending = self._send_now()  # what is still queued goes out now
        if sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(sending), LEAVE_DRAIN_SECONDS)
        for feed in self.feeds.values():
            feed.stop()


def _told(weddings: list[int]) -> dict[int, list[ToldWire]]:
    return presence_store().told_wire(wedding_ids=weddings, now=time.time())


def _join_batch(devices: list[DevicePresence], *, tell: Tell) -> dict[tuple[int, str], PresenceSnapshot] | None:
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
