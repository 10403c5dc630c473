"""A wedding's latest events as this node's feed dispatched them, for resumes served from memory.

A resume after a blip or a node loss asks for the few events it missed: every socket of a wedding
asks for nearly the same ones, at once. The feed already decoded and encoded each of them for its
live sockets; it keeps the latest here, gap-free, so that such a replay needs neither a thread hop
nor a read of the log (decision 0046). Anything older, or not held, is read from the log as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from realtime.framing import text_frame
from realtime.messages import EventMessage
from realtime.names import Priority
from realtime.outbox import conflation_key
from realtime.protocol import encode

RECENT_EVENTS = 256  # per wedding feed: minutes of a busy wedding day, hours of a quiet one
RECENT_SECONDS = 600.0  # older events are read from the log (retention purges by age there)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """An event as this node hands it to its sockets: encoded once, shared by every local socket."""

    message: EventMessage
    text: str
    framed: bytes
    conflate_key: str | None

    @classmethod
    def of(cls, message: EventMessage) -> FeedEvent:
        text = encode(message.frame)
        return cls(message, text, text_frame(text.encode()), conflation_key(message.frame))


def audience_includes(message: EventMessage, *, member_id: int, role: str, min_priority: int) -> bool:
    """Whether a member (``member_id`` as ``role``) who asked for ``min_priority`` gets the event."""
    return message.priority >= min_priority and (role in message.roles or member_id in message.members)


@dataclass(frozen=True, slots=True)
class ReplayedEvent:
    text: str
    priority: Priority
    seq: int
    conflate_key: str | None


@dataclass(slots=True, eq=False)
class _Held:
    event: FeedEvent
    heard: float  # monotonic, when the feed dispatched it
    replay: ReplayedEvent | None = None  # its replay frame, encoded at the first resume that needs it

    def replayed(self) -> ReplayedEvent:
        if self.replay is None:
            message = self.event.message
            self.replay = ReplayedEvent(
                text=encode({**message.frame, "replay": True}),
                priority=Priority(message.priority),
                seq=message.seq,
                conflate_key=self.event.conflate_key,
            )
        return self.replay


class RecentEvents:
    """The feed's last dispatched events, consecutive seqs ending at :attr:`upto`."""

    def __init__(
        self,
        *,
        after: int,
        size: int = RECENT_EVENTS,
        seconds: float = RECENT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._held: deque[_Held] = deque(maxlen=size)
        self._after = after  # the seq before the first held one, while none is held
        self._seconds = seconds
        self._clock = clock

    @property
    def upto(self) -> int:
        return self._held[-1].event.message.seq if self._held else self._after

    def add(self, event: FeedEvent) -> None:
        seq = event.message.seq
        if seq != self.upto + 1:  # the feed skipped or repeated one: start again from this one
            self._held.clear()
            self._after = seq - 1
        self._held.append(_Held(event, self._clock()))

    def replay(self, *, since: int, member_id: int, role: str, min_priority: int) -> tuple[ReplayedEvent, ...] | None:
        """The events after ``since`` up to :attr:`upto` that the member may see, or None when they
        are not all held here (older than what is kept, or ``since`` beyond it): read the log then."""
        upto = self.upto
        if since > upto:
            return None
        first = self._held[0].event.message.seq if self._held else upto + 1
        if since < first - 1:
            return None
        missed = len(self._held) - (since - first + 1)  # how many of the held are after since
        if missed and self._held[len(self._held) - missed].heard < self._clock() - self._seconds:
            return None
        held = self._held
        return tuple(
            held[index].replayed()
            for index in range(len(held) - missed, len(held))  # a deque indexes its ends cheaply
            if audience_includes(held[index].event.message, member_id=member_id, role=role, min_priority=min_priority)
        )
