"""A node's cache of who may publish: the membership each publish and sync op checks (decision 0039).

Every publish used to read the sender's membership from PostgreSQL. A node now keeps the rows it
read, per (user, wedding), and drops them when it hears of a change: the control messages every
node gets after a member change commits (realtime.receivers), and its own access check, which
finds within seconds what a lost message did not bring (realtime.node.housekeeping). Entries
also expire after ``REALTIME_MEMBER_CACHE_SECONDS``: the bound for what neither path reports,
such as a user renamed in the admin.

Pool threads read and fill the cache while the event loop drops entries, so every step holds a
lock. A read that was under way when an invalidation came is not stored: it may have read the
row from before the change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cachetools import TTLCache

from monitoring.metrics import MEMBER_CACHE_INVALIDATIONS, MEMBER_CACHE_LOOKUPS
from realtime.messages import ControlMessage
from realtime.selectors import MemberRow, member_from_row, member_row_access, member_row_for_publish
from wedsync.models import Member

InvalidationSource = Literal["control", "access_check"]
Key = tuple[int, int]  # (user id, wedding id)

_HITS = MEMBER_CACHE_LOOKUPS.labels(outcome="hit")
_MISSES = MEMBER_CACHE_LOOKUPS.labels(outcome="miss")


@dataclass(frozen=True, slots=True)
class HeldMembership:
    """What an entry says: the user is the wedding's active member ``member_id`` with ``role``."""

    user_id: int
    wedding_id: int
    member_id: int
    role: str


class MemberCache:
    """Membership rows by (user, wedding), for the publish path of one node."""

    def __init__(
        self,
        *,
        seconds: float,
        size: int,
        read: Callable[..., MemberRow | None] = member_row_for_publish,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rows: TTLCache[Key, MemberRow] | None = (
            TTLCache(maxsize=size, ttl=seconds, timer=timer) if seconds > 0 else None
        )
        # What each stored row says, by user then wedding: a user's drop touches only theirs, and the
        # access check reads this plain dict, not the cache (whose reads reorder it). It may name rows
        # that expired or made room since, until the access check's next call of held() prunes them.
        self._held: dict[int, dict[int, HeldMembership]] = {}
        self._read = read
        self._lock = threading.Lock()
        self._generation = 0  # one more with every invalidation

    def member(self, *, user_id: int, wedding_id: int) -> Member | None:
        """The user's active member of the wedding (a fresh instance each call), or None; from the
        cache when it holds the pair, else from the database, stored unless an invalidation came
        meanwhile. Non-members are not cached: becoming a member sends no message."""
        rows = self._rows
        key = (user_id, wedding_id)
        with self._lock:
            row = None if rows is None else _fresh(rows, key)
            generation = self._generation
        if row is not None:
            _HITS.inc()
            return member_from_row(row)
        _MISSES.inc()
        row = self._read(user_id=user_id, wedding_id=wedding_id)
        if row is None:
            return None
        member_id, role = member_row_access(row)
        entry = HeldMembership(user_id=user_id, wedding_id=wedding_id, member_id=member_id, role=role)
        with self._lock:
            if rows is not None and self._generation == generation:
                rows[key] = row
                self._held.setdefault(user_id, {})[wedding_id] = entry
        return member_from_row(row)

    @property
    def generation(self) -> int:
        """One more with every invalidation: a membership read when it had another value may be stale."""
        return self._generation

    def held(self) -> list[HeldMembership]:
        """What the cache holds now, for the access check to compare with the database."""
        rows = self._rows
        if rows is None:
            return []
        with self._lock:
            for (user_id, wedding_id), _row in rows.expire():
                self._held.get(user_id, {}).pop(wedding_id, None)
            if sum(len(weddings) for weddings in self._held.values()) > len(rows):
                self._prune(rows)  # some made room for newer ones (a full cache): find which
            return [entry for weddings in self._held.values() for entry in weddings.values()]

    def _prune(self, rows: TTLCache[Key, MemberRow]) -> None:
        with rows.timer:
            for user_id, weddings in list(self._held.items()):
                for wedding_id in [wedding_id for wedding_id in weddings if (user_id, wedding_id) not in rows]:
                    del weddings[wedding_id]
                if not weddings:
                    del self._held[user_id]

    def forget(self, *, user_id: int, wedding_id: int | None = None, source: InvalidationSource) -> None:
        """Drop the user's entries (of one wedding, or all of theirs)."""
        rows = self._rows
        with self._lock:
            self._generation += 1  # even with nothing stored: a read of theirs may be under way
            if rows is None:
                return
            if wedding_id is None:
                doomed = list(self._held.pop(user_id, {}))
            else:
                doomed = [wedding_id]
                self._held.get(user_id, {}).pop(wedding_id, None)
            dropped = _drop(rows, [(user_id, wedding) for wedding in doomed])
        if dropped:
            MEMBER_CACHE_INVALIDATIONS.labels(source=source).inc(dropped)

    def forget_stale(self, stale: list[HeldMembership]) -> None:
        """The access check's drops: each entry that still says what the check found wrong (one read
        again since, after the change, is right and stays)."""
        rows = self._rows
        if rows is None or not stale:
            return
        with self._lock:
            self._generation += 1
            doomed = []
            for entry in stale:
                weddings = self._held.get(entry.user_id, {})
                if weddings.get(entry.wedding_id) == entry:
                    del weddings[entry.wedding_id]
                    doomed.append((entry.user_id, entry.wedding_id))
            dropped = _drop(rows, doomed)
        if dropped:
            MEMBER_CACHE_INVALIDATIONS.labels(source="access_check").inc(dropped)

    def forget_for(self, message: ControlMessage) -> None:
        """Drop what a control message from any node says is out of date: a member's change (their
        access or their details) drops that membership, a revocation of the user's tokens (which a
        deactivation, a password change and a sign-out everywhere send) all of theirs."""
        if message.kind in ("member_changed", "member_updated") and message.user:
            self.forget(user_id=message.user, wedding_id=message.wedding or None, source="control")
        elif message.kind == "tokens_revoked":
            self.forget(user_id=message.user, source="control")


def _fresh(rows: TTLCache[Key, MemberRow], key: Key) -> MemberRow | None:
    # cachetools reads its clock once for "is it there" and again for "is it fresh": with the clock
    # held still, an entry cannot expire between the two and raise KeyError.
    with rows.timer:
        return rows.get(key)


def _drop(rows: TTLCache[Key, MemberRow], keys: list[Key]) -> int:
    """Remove ``keys`` that are held (and fresh); how many were."""
    dropped = 0
    with rows.timer:
        for key in keys:
            if key in rows:
                del rows[key]
                dropped += 1
    return dropped
