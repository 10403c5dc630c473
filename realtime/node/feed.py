"""One wedding's events on this node, in seq order, and the subscriptions they go to.

A :class:`WeddingFeed` takes the wedding's layer messages strictly in ``seq`` order: a message whose
``seq`` skips ahead means the layer dropped something (capacity, a Redis restart), and the feed
reads the missing events back from the log before going on. Each :class:`Subscription` then hands
an event to its socket if the member is in the event's audience, holding live events while its
replay is sent so that each goes out exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import structlog
from channels.db import database_sync_to_async
from django.conf import settings

from monitoring.metrics import (
    DELIVERY_LATENCY,
    EVENT_DELIVERIES,
    FANOUT_SIZE,
    FEED_GAPS_REPAIRED,
    FEED_INBOX_DROPPED,
    SOCKET_CUTOFFS,
)
from realtime.messages import EventMessage
from realtime.names import Priority
from realtime.node.recent import FeedEvent, RecentEvents, ReplayedEvent, audience_includes
from realtime.node.socket import Socket
from realtime.selectors import MembershipView, events_after

logger = structlog.get_logger(__name__)

RETRY_DELAY = 0.5  # a failed read of the log is tried again after this
HELD_MAX = 2000  # live events held for one subscription while its replay is sent


@dataclass(frozen=True, slots=True)
class Repair:
    """The heads poll saw events up to ``upto`` that never arrived: read them from the log."""

    upto: int


@dataclass(slots=True, eq=False)
class Subscription:
    socket: Socket
    topic: str
    member_id: int
    role: str
    min_priority: int
    cursor: int = 0  # the highest seq this subscription has handled (delivered or filtered out)
    resent: dict[int, int] | None = None  # seq -> times re-sent unacknowledged (made at the first)
    held: list[FeedEvent] | None = field(default_factory=list)  # live events held during replay
    # False while attached ahead of its access check (see NodeHub.subscribe): it holds everything
    # then, since whose events it may see is not known yet, and reconciliation leaves it alone.
    confirmed: bool = True

    def offer(self, event: FeedEvent) -> bool:
        """Hand a live event on; True when it went to the socket now (not held, not filtered out)."""
        if self.held is not None:
            if self.confirmed and not self.wants(event.message):
                return False  # go_live moves the cursor past it anyway
            if len(self.held) >= HELD_MAX:  # a replay that cannot keep up with the room: resume later
                SOCKET_CUTOFFS.labels("replay").inc()
                self.socket.too_slow()
                return False
            self.held.append(event)
            return False
        return self._deliver(event)

    def _deliver(self, event: FeedEvent) -> bool:
        message = event.message
        if message.seq <= self.cursor:
            return False  # already sent by the replay
        self.cursor = message.seq
        if not self.wants(message):
            return False
        self.socket.push_event(
            event.text,
            priority=Priority(message.priority),
            topic=self.topic,
            seq=message.seq,
            conflate_key=event.conflate_key,
            framed=event.framed,
        )
        return True

    def wants(self, message: EventMessage) -> bool:
        """Whether the member is in the event's audience at the subscription's priority floor."""
        return audience_includes(
            message.priority,
            message.roles,
            message.members,
            member_id=self.member_id,
            role=self.role,
            min_priority=self.min_priority,
        )

    def confirm(self, membership: MembershipView) -> None:
        """The access check passed: take the member's identity and drop held events it may not see."""
        self.member_id, self.role, self.confirmed = membership.member_id, membership.role, True
        if self.held:
            self.held = [event for event in self.held if self.wants(event.message)]

    def go_live(self, *, upto: int) -> None:
        """After the replay up to ``upto``: deliver what was held (newer events only), then live."""
        # upto, not max(cursor, upto): a ``since`` beyond the stream (history reset) is answered
        # recovered:false, and live delivery continues right after upto.
        self.cursor = upto
        held, self.held = self.held or [], None
        delivered = sum(self._deliver(event) for event in held)
        if delivered:
            EVENT_DELIVERIES.inc(delivered)


class WeddingFeed:
    """One wedding's events on this node, in seq order, gaps repaired from the log."""

    def __init__(self, *, wedding_id: int, last_seq: int, epoch: str) -> None:
        self.wedding_id = wedding_id
        self.last_seq = last_seq
        self.epoch = epoch  # the stream's, when the feed opened: only a reset of its history changes it
        self.recent = RecentEvents(after=last_seq)
        self.subscriptions: dict[str, Subscription] = {}
        # Bounded: on Pub/Sub a node's backlog would otherwise pile up here, in its own memory,
        # where Redis's output-buffer limit never sees it (decision 0014). What does not fit is
        # dropped and read back from the log, like any other gap.
        self.inbox: asyncio.Queue[EventMessage | Repair] = asyncio.Queue(maxsize=settings.REALTIME_FEED_INBOX_MAX)
        self.inbox_dropped = 0
        self.offered = last_seq  # the highest seq put in the inbox
        self.suspected_head = 0
        self.idle_since: float | None = None
        self.task = asyncio.create_task(self._run(), name=f"feed-{wedding_id}")

    def held_replay(
        self, *, since: int | None, epoch: str | None, min_priority: int, membership: MembershipView
    ) -> tuple[ReplayedEvent, ...] | None:
        """What the member missed, from the feed's recent events (nothing for a first subscribe), or
        None when the log must answer: another epoch, a ``since`` the feed does not hold or past it."""
        if epoch is not None and epoch != self.epoch:
            return None  # the log answers recovered: false
        if self.recent.upto != self.last_seq:  # an event the feed took but could not keep: the log has it
            return None
        after = self.last_seq if since is None else since
        if self.last_seq - after > settings.REALTIME_REPLAY_MAX:
            return None
        return self.recent.replay(
            since=after, member_id=membership.member_id, role=membership.role, min_priority=int(min_priority)
        )

    def offer(self, message: EventMessage) -> None:
        """Queue an event for the feed's task, or drop it if the inbox is full: the next event's seq
        gap (or the heads poll, for a last one) has the feed read it from the log instead."""
        try:
            self.inbox.put_nowait(message)
            self.offered = max(self.offered, message.seq)
        except asyncio.QueueFull:
            FEED_INBOX_DROPPED.inc()
            self.inbox_dropped += 1
            if self.inbox_dropped == 1 or self.inbox_dropped % 1000 == 0:
                logger.warning("feed.inbox_full", wedding=self.wedding_id, seq=message.seq, dropped=self.inbox_dropped)

    def offer_next(self, message: EventMessage) -> None:
        """An event committed in this process, taken only when it is the next the feed expects: one
        that skips ahead is left to Redis, which brings the missing one first (realtime.node.local)."""
        if message.seq == max(self.offered, self.last_seq) + 1:
            self.offer(message)

    def repair_soon(self, *, upto: int) -> None:
        """Have the feed read the log up to ``upto`` (a full inbox repairs itself from its gaps)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.inbox.put_nowait(Repair(upto=upto))

    async def _run(self) -> None:
        while True:
            message = await self.inbox.get()
            try:
                await self._take(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad message must not stop the wedding's feed
                logger.exception("feed.message_failed", wedding=self.wedding_id, seq=getattr(message, "seq", None))

    async def _take(self, message: EventMessage | Repair) -> None:
        if isinstance(message, Repair):
            if message.upto > self.last_seq:
                FEED_GAPS_REPAIRED.labels("head").inc()
                logger.info("feed.gap", wedding=self.wedding_id, after=self.last_seq, head=message.upto, by="head")
            await self._repair(upto=message.upto)
            return
        seq = message.seq
        if seq <= self.last_seq:
            return  # a duplicate, or already read from the log
        if seq > self.last_seq + 1:
            FEED_GAPS_REPAIRED.labels("seq").inc()
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

    def _dispatch(self, message: EventMessage) -> None:
        if message.seq != self.last_seq + 1:
            logger.error("feed.out_of_order", wedding=self.wedding_id, last=self.last_seq, got=message.seq)
        self.last_seq = message.seq
        event = FeedEvent.of(message)
        self.recent.add(event)
        delivered = 0
        for subscription in list(self.subscriptions.values()):
            delivered += subscription.offer(event)
        FANOUT_SIZE.observe(delivered)
        if delivered:
            EVENT_DELIVERIES.inc(delivered)
            if message.committed_at:  # a live event (one read back from the log has no commit time)
                DELIVERY_LATENCY.observe(max(0.0, time.time() - message.committed_at))

    def stop(self) -> None:
        self.task.cancel()
