"""A wedding's latest events as this node's feed dispatched them, for resumes served from memory.

A resume after a blip or a node loss asks for the few events it missed: every socket of a wedding
asks for nearly the same ones, at once. The feed already decoded and encoded each of them for its
live sockets; it keeps the latest here, gap-free, so that such a replay needs neither a thread hop
nor a read of the log (decision 0046). Anything older, or not held, is read from the log as before.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from realtime.framing import text_frame
from realtime.messages import EventMessage
from realtime.names import Priority
from realtime.outbox import conflation_key
from realtime.protocol import encode

RECENT_EVENTS = 128  # per wedding feed: a storm's few seconds at any wedding's rate, minutes on a wedding day
RECENT_SECONDS = 120.0  # older events are replayed from the log; dropped from memory as newer ones come


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


def audience_includes(
    priority: int, roles: list[str], members: list[int], *, member_id: int, role: str, min_priority: int
) -> bool:
    """Whether a member (``member_id`` as ``role``) who asked for ``min_priority`` gets an event of
    ``priority`` addressed to ``roles`` and ``members``: live (the feed) and replayed from memory alike."""
    return priority >= min_priority and (role in roles or member_id in members)


@dataclass(frozen=True, slots=True)
class ReplayedEvent:
    text: str
    priority: Priority
    seq: int
    conflate_key: str | None


# A live frame's text ends with its ``replay`` field (event_frame's last): a replay's text is the same
# text with that field true, made without decoding the frame again.
_LIVE_TAIL = encode({"replay": False})[1:]
_REPLAY_TAIL = encode({"replay": True})[1:]


def replay_text_of(live_text: str) -> str:
    if live_text.endswith(_LIVE_TAIL):
        return live_text[: -len(_LIVE_TAIL)] + _REPLAY_TAIL
    return encode({**json.loads(live_text), "replay": True})


@dataclass(slots=True, eq=False)
class _Held:
    """What a replay needs of an event, and no more: the feed's frame dict and framed bytes are not kept."""

    seq: int
    priority: int
    roles: list[str]
    members: list[int]
    text: str  # the live frame
    conflate_key: str | None
    heard: float  # monotonic, when the feed dispatched it
    replay: ReplayedEvent | None = None  # its replay frame, encoded at the first resume that needs it

    def replayed(self) -> ReplayedEvent:
        if self.replay is None:
            self.replay = ReplayedEvent(
                text=replay_text_of(self.text),
                priority=Priority(self.priority),
                seq=self.seq,
                conflate_key=self.conflate_key,
            )
        return self.replay


class RecentEvents:
    """The feed's last dispatched events, consecutive seqs ending at :attr:`upto`, none older than
    ``seconds`` once a newer one comes."""

    def __init__(
        self,
        *,
        after: int,
        size: int = RECENT_EVENTS,
        seconds: float = RECENT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._held: deque[_Held] = deque()
        self._after = after  # the seq before the first held one
        self._size = size
        self._seconds = seconds
        self._clock = clock

    @property
    def upto(self) -> int:
        return self._held[-1].seq if self._held else self._after

    def add(self, event: FeedEvent) -> None:
        message, now = event.message, self._clock()
        if message.seq != self.upto + 1:  # the feed skipped or repeated one: start again from this one
            self._held.clear()
            self._after = message.seq - 1
        held = self._held
        while held and (len(held) >= self._size or held[0].heard < now - self._seconds):
            self._after = held.popleft().seq
        held.append(
            _Held(
                seq=message.seq,
                priority=message.priority,
                roles=message.roles,
                members=message.members,
                text=event.text,
                conflate_key=event.conflate_key,
                heard=now,
            )
        )

    def replay(self, *, since: int, member_id: int, role: str, min_priority: int) -> tuple[ReplayedEvent, ...] | None:
        """The events after ``since`` up to :attr:`upto` that the member may see, or None when they
        are not all held here (older than what is kept, or ``since`` beyond it): read the log then."""
        held = self._held
        if since > self.upto or since < self._after:
            return None
        missed = self.upto - since  # consecutive seqs: the last ``missed`` held ones
        if missed and held[len(held) - missed].heard < self._clock() - self._seconds:
            return None
        return tuple(
            event.replayed()
            for event in (held[index] for index in range(len(held) - missed, len(held)))  # cheap at a deque's end
            if audience_includes(
                event.priority, event.roles, event.members, member_id=member_id, role=role, min_priority=min_priority
            )
        )
