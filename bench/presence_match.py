"""Presence churn's bookkeeping: what each update sets, and how a receiver's diffs are matched to
the updates sent (docs/benchmarks.md, presence churn). Pure functions, run in the bench's main
process over what the load generator's workers recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The n-th update of a member sets status STATUSES[n % 3] and battery 20 + 5 * (n % 17): the status
# changes at every update and the battery moves to another 5-point band (20..100, never across
# the 15 % line, so only bands count), so every update is a change worth telling (presence/state.py
# presence_diff_kind), and the pair names n modulo 51 (3 and 17 are coprime). Everyone may set
# status and battery (no location, no activity: guests may set neither).
PRESENCE_STATUSES = ("online", "away", "busy")
PRESENCE_BATTERY_STEPS = 17
PRESENCE_PERIOD = len(PRESENCE_STATUSES) * PRESENCE_BATTERY_STEPS


def presence_state(n: int) -> dict[str, Any]:
    return {"status": PRESENCE_STATUSES[n % 3], "battery": 20 + 5 * (n % PRESENCE_BATTERY_STEPS)}


def presence_token(state: dict[str, Any]) -> int | None:
    """n modulo PRESENCE_PERIOD for a state :func:`presence_state` made; None for any other."""
    status, battery = state.get("status"), state.get("battery")
    if status not in PRESENCE_STATUSES or not isinstance(battery, int) or battery < 20 or (battery - 20) % 5:
        return None
    step = (battery - 20) // 5
    if step >= PRESENCE_BATTERY_STEPS:
        return None
    index = PRESENCE_STATUSES.index(status)
    return next(t for t in range(PRESENCE_PERIOD) if t % 3 == index and t % PRESENCE_BATTERY_STEPS == step)


# One member's updates as sent: (n, send time, accepted); n rises with the send time.
SentUpdate = tuple[int, float, bool]


@dataclass
class PresenceMatch:
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    superseded: int = 0  # delivered only by a newer update's diff (its own state was never seen)
    stale: int = 0  # diffs naming a state no newer than one already received (duplicates)
    unmatched: int = 0  # diffs whose state matches no update sent before they arrived
    latencies: list[float] = field(default_factory=list)

    def add(self, other: PresenceMatch) -> None:
        self.expected += other.expected
        self.delivered += other.delivered
        self.lost += other.lost
        self.superseded += other.superseded
        self.stale += other.stale
        self.unmatched += other.unmatched
        self.latencies += other.latencies


def presence_match(sent: list[SentUpdate], receipts: list[tuple[float, int]]) -> PresenceMatch:
    """Pair one receiver's diffs about one member with that member's updates.

    ``sent``: the member's updates in the order sent (see :data:`SentUpdate`); ``receipts``: (arrival
    time, token) of each diff naming the member, in arrival order. The rule:

    - a receipt reflects update ``j``: the newest update sent before the receipt arrived whose
      token is the receipt's (updates 51 apart share a token; a member sends one every few
      seconds, so the newest is the one: an older one would mean a diff minutes late);
    - an accepted update ``n`` is delivered by the first receipt reflecting ``j >= n``: presence is
      state, not events, and the server merges one member's changes within its 50 ms window, so
      a diff that shows a newer state tells the receiver everything ``n`` did. Its latency is that
      receipt's arrival minus ``n``'s send time. ``superseded`` counts those delivered only by a
      newer state (their own never arrived), so a server dropping diffs shows up even when a
      later diff covers for them;
    - an accepted update no receipt reflects (nothing as new arrived) is lost.
    """
    by_token: dict[int, list[tuple[float, int]]] = {}
    for n, at, _accepted in sent:
        by_token.setdefault(n % PRESENCE_PERIOD, []).append((at, n))
    reflected: list[tuple[float, int]] = []  # (arrival, j) of receipts that reflect a newer state
    match = PresenceMatch()
    newest = -1
    for arrival, token in receipts:
        candidates = by_token.get(token, [])
        j = next((n for at, n in reversed(candidates) if at <= arrival), None)
        if j is None:
            match.unmatched += 1
        elif j <= newest:
            match.stale += 1
        else:
            newest = j
            reflected.append((arrival, j))
    index = 0
    for n, at, accepted in sent:
        if not accepted:
            continue
        match.expected += 1
        while index < len(reflected) and reflected[index][1] < n:
            index += 1
        if index == len(reflected):
            match.lost += 1
            continue
        arrival, j = reflected[index]
        match.delivered += 1
        match.latencies.append(arrival - at)
        if j != n:
            match.superseded += 1
    return match
