"""A subscription's replay: read with its access check in one thread hop, then sent a page at a
time before the subscription goes live (realtime.node.hub runs the sequence); or, when the feed
holds what was missed and the connect's membership read is still trusted, sent from memory with no
hop at all (:class:`ConnectRead`, realtime.node.recent, decision 0046)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from django.conf import settings

from monitoring.metrics import REPLAY_EVENTS
from realtime.db import per_socket_db
from realtime.names import Priority
from realtime.node.feed import Subscription, WeddingFeed
from realtime.node.recent import ReplayedEvent
from realtime.node.socket import Socket
from realtime.outbox import conflation_key
from realtime.protocol import encode
from realtime.selectors import MembershipView, Replay, events_replay, events_replay_page
from realtime.services.sockets import socket_subscribe_check
from wedsync.services.audit import ClientInfo

logger = structlog.get_logger(__name__)

_events_replay_page = per_socket_db(events_replay_page)  # wrapped once (realtime.db)

# How long a connect's membership read stands in for a subscribe's access check: the subscribes
# that follow a welcome come within it, and the access check, which never sees the read itself,
# compares the subscriptions it made within two of its rounds (every 5 s).
CONNECT_READ_SECONDS = 10.0


class ReplayInterrupted(Exception):
    """A replay page could not be read (the database went away): the client resumes from its seq."""


@dataclass(frozen=True, slots=True)
class ConnectRead:
    """The memberships a socket's connect read, with the node's membership generation
    (:attr:`MemberCache.generation <realtime.member_cache.MemberCache.generation>`) and the time
    taken just before it read them."""

    memberships: tuple[MembershipView, ...]
    generation: int
    at: float  # monotonic

    def holds(self, wedding_id: int) -> bool:
        return any(membership.wedding_id == wedding_id for membership in self.memberships)

    def membership(self, *, wedding_id: int, generation: int, now: float, seconds: float) -> MembershipView | None:
        """The connect's membership of the wedding, while it is fresh: read less than ``seconds`` ago
        (the hub passes :data:`CONNECT_READ_SECONDS` at most), and no member change heard since (any
        would have moved the generation; one heard later finds the subscription and ends it)."""
        if generation != self.generation or now - self.at >= seconds:
            return None
        return next((m for m in self.memberships if m.wedding_id == wedding_id), None)

    def trusted(self, *, wedding_id: int, generation: int) -> MembershipView | None:
        """:meth:`membership` now, for the node whose membership generation is ``generation``;
        ``REALTIME_MEMBER_CACHE_SECONDS=0`` turns the trust off."""
        seconds = min(settings.REALTIME_MEMBER_CACHE_SECONDS, CONNECT_READ_SECONDS)
        return self.membership(wedding_id=wedding_id, generation=generation, now=time.monotonic(), seconds=seconds)


@dataclass(frozen=True, slots=True, eq=False)
class Subscribed:
    """A subscription whose reply is queued: its replay to send, then :meth:`go_live`."""

    feed: WeddingFeed
    socket: Socket
    membership: MembershipView
    replay: Replay
    subscription: Subscription
    min_priority: Priority
    memory: tuple[ReplayedEvent, ...] | None = None  # the whole replay, when the feed held it (decision 0046)

    def current(self) -> bool:
        """Whether the subscription still stands (not removed, re-roled or replaced meanwhile)."""
        return self.feed.subscriptions.get(self.socket.connection_id) is self.subscription

    async def events(self) -> AsyncIterator[ReplayedEvent]:
        """The replay, a page at a time (a 5,000-event replay never sits in memory whole); it ends
        early when the subscription no longer stands. Raises :class:`ReplayInterrupted`."""
        if self.memory is not None:
            async for held in self._from_memory(self.memory):
                yield held
            return
        membership, page, replayed = self.membership, self.replay.first, 0
        try:
            while True:
                for event, seq in zip(page.frames, page.seqs, strict=True):
                    if not self.current():
                        return
                    replayed += 1
                    yield ReplayedEvent(
                        text=encode(event),
                        priority=Priority.from_wire(event["priority"]),
                        seq=seq,
                        conflate_key=conflation_key(event),
                    )
                if page.next_after is None:
                    return
                try:
                    page = await _events_replay_page(
                        wedding_id=membership.wedding_id,
                        member_id=membership.member_id,
                        role=membership.role,
                        after=page.next_after,
                        upto=self.replay.upto,
                        min_priority=int(self.min_priority),
                    )
                except Exception as error:
                    logger.exception("socket.replay_page_failed", connection=self.socket.connection_id)
                    raise ReplayInterrupted from error
        finally:
            REPLAY_EVENTS.observe(replayed)

    async def _from_memory(self, memory: tuple[ReplayedEvent, ...]) -> AsyncIterator[ReplayedEvent]:
        replayed = 0
        try:
            for held in memory:
                if not self.current():
                    return
                replayed += 1
                yield held
        finally:
            REPLAY_EVENTS.observe(replayed)

    def go_live(self) -> None:
        self.subscription.go_live(upto=self.replay.upto)


def access_check(*, user_id: int, wedding_id: int, client: ClientInfo) -> Callable[[], MembershipView]:
    def check() -> MembershipView:
        return socket_subscribe_check(user_id=user_id, wedding_id=wedding_id, client=client)

    return check


def checked_replay(
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


checked_replay_hop = per_socket_db(checked_replay)  # wrapped once (realtime.db)
