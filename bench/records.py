"""The shared-records scenario: members editing one wedding's timeline (docs/benchmarks.md).

The editors (every member who may change the timeline) are held by one load-generator process and
send edits paced over them in turn; every ``CONFLICT_EVERY``-th edit is deliberately stale: it is
based on the version before the newest change someone else made, to the field that change set, so
the engine must resolve it (``field_merge`` on the timeline: merged or overridden by rank). The
same plan runs as ``sync`` ops (the engine) or as ``publish`` of a ``chat.message`` to the same
audience (the path before the engine).

What each member must receive is computed from the replies, never assumed: an accepted write
(``changed`` not empty) is one ``record.updated`` per member of the item's audience (every member
whose role may view the timeline) and its author, matched by ``(id, version)``, which the engine
gives one write only. Seqs cannot be the key there: a write whose audience holds roles that may not
see ceremony details is stored as two events (decision 0027) and the reply names one seq. A
publish is matched by the seq it was answered with. Notices are expected where the engine owes
them: ``overridden`` to an author who lost fields, ``overwritten`` to each other member whose
value of a field the write won was written after the write's base.

The functions here are pure or run in a worker's event loop; the scenario itself is
``bench.scenarios.shared_records``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wedsync.permissions import DEFAULT_MATRIX, Permission, Role, Scope

if TYPE_CHECKING:
    from bench.loadgen import SocketSpec
    from bench.worker import BenchSocket, Worker, _Incoming

CONFLICT_EVERY = 10  # every tenth edit is deliberately stale: 10 % conflicting
EDIT_FIELDS = ("title", "notes")  # free text: every edit writes a value no other edit wrote
RECENT_WRITES = 50  # the newest accepted writes an editor may pick "someone just changed" from
REPLY_WAIT = 30.0  # for each edit's reply, after it was sent
WATCHED = frozenset({"chat.message", "record.created", "record.updated", "record.deleted", "record.conflict"})
MODES = ("sync", "publish")

ROLES = frozenset(role.value for role in Role)
EDITING_ROLES = frozenset(
    r.value for r, cells in DEFAULT_MATRIX.items() if cells[Permission.EDIT_TIMELINE] != Scope.NONE
)
VIEWING_ROLES = frozenset(
    r.value for r, cells in DEFAULT_MATRIX.items() if cells[Permission.VIEW_TIMELINE] == Scope.ALL
)
CEREMONY_ROLES = frozenset(
    r.value for r, cells in DEFAULT_MATRIX.items() if cells[Permission.VIEW_CEREMONY_DETAILS] != Scope.NONE
)
HIDDEN_FIELD = "ceremony_notes"


def modes_for(kind: str) -> list[str]:
    """What a server can run: the product both plans; the ceiling the publish plan (it has no
    engine: its answers are the floor a socket server's reply can reach); the baseline nothing (it
    has no audiences, so it cannot deliver the same plan)."""
    if kind.startswith("product"):
        return list(MODES)
    return ["publish"] if kind == "ceiling" else []


@dataclass(frozen=True)
class Timeline:
    """One seeded wedding as the scenario needs it (``seed_demo --json`` with ``timeline``)."""

    topic: str
    versions: dict[int, int]  # item -> its version when seeded
    audiences: dict[int, frozenset[int]]  # item -> the members its events reach (its author aside)
    to: dict[int, list[str]]  # item -> a publish's ``to`` naming the same audience
    editors: list[int]  # members who may change the timeline, in member order
    roles: dict[int, str]

    @classmethod
    def of(cls, wedding: dict[str, Any]) -> Timeline:
        roles = {int(m["member"]): str(m["role"]) for m in wedding["members"]}
        viewers = frozenset(pk for pk, role in roles.items() if role in VIEWING_ROLES)
        viewing_roles = [f"role:{role}" for role in sorted(VIEWING_ROLES)]
        audiences = {int(item["id"]): viewers for item in wedding["timeline"]}
        to = {int(item["id"]): viewing_roles for item in wedding["timeline"]}
        return cls(
            topic=f"wedding:{wedding['id']}",
            versions={int(item["id"]): int(item["version"]) for item in wedding["timeline"]},
            audiences=audiences,
            to=to,
            editors=sorted(pk for pk, role in roles.items() if role in EDITING_ROLES),
            roles=roles,
        )

    def wire(self) -> dict[str, Any]:
        """What the editors' process needs (sent over its pipe)."""
        return {"topic": self.topic, "versions": self.versions, "to": self.to, "editors": self.editors}


# --- choosing edits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """An accepted write as the editors learnt it from a reply."""

    item: int
    version: int
    author: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Edit:
    n: int
    member: int
    item: int
    field: str
    base: int
    conflicting: bool

    @property
    def value(self) -> str:
        return f"Edit {self.n}" if self.field == "title" else f"note {self.n} by member {self.member}"


@dataclass
class EditState:
    """What the editors' process knows of the timeline, across calls (warm-up, then measured)."""

    versions: dict[int, int]
    rng: random.Random
    next_n: int = 0
    recent: list[Write] = field(default_factory=list)  # newest last

    @classmethod
    def of(cls, versions: dict[int, int], *, seed: int = 18) -> EditState:
        return cls(versions=dict(versions), rng=random.Random(seed))  # noqa: S311 (a plan, not a secret)

    def learn(self, *, item: int, version: int, author: int, changed: Iterable[str]) -> None:
        self.versions[item] = max(self.versions.get(item, 0), version)
        fields = tuple(changed)
        if fields:
            self.recent.append(Write(item=item, version=version, author=author, fields=fields))
            del self.recent[:-RECENT_WRITES]


def next_edit(state: EditState, *, editors: list[int], conflict_every: int = CONFLICT_EVERY) -> Edit:
    """The next edit: by the editors in turn; every ``conflict_every``-th based on the version
    before the newest write by someone else, to the field it set (contested, so resolved by the
    strategy), or a plain edit while nobody else has written yet."""
    n = state.next_n
    state.next_n += 1
    member = editors[n % len(editors)]
    if n % conflict_every == conflict_every - 1:
        for write in reversed(state.recent):
            if write.author != member and write.version > 1:
                return Edit(n, member, write.item, write.fields[0], write.version - 1, conflicting=True)
    item = state.rng.choice(sorted(state.versions))
    return Edit(n, member, item, state.rng.choice(EDIT_FIELDS), state.versions[item], conflicting=False)


def edit_frame(edit: Edit, *, mode: str, topic: str, to: list[str], sent: float) -> dict[str, Any]:
    if mode == "sync":
        return {
            "op": "sync",
            "ref": f"e{edit.n}",
            "topic": topic,
            "record": "timeline_item",
            "id": edit.item,
            "base_version": edit.base,
            "changes": {edit.field: edit.value},
            "op_id": f"bench-{edit.member}-{edit.n}",
        }
    return {
        "op": "publish",
        "ref": f"e{edit.n}",
        "topic": topic,
        "type": "chat.message",
        "data": {"text": f"sent {sent:.6f}"},
        "to": to,
    }


# --- what every member must receive -------------------------------------------------------------------


@dataclass
class Expected:
    events: dict[int, set[Hashable]] = field(default_factory=dict)  # member -> keys of events owed
    notices: dict[int, set[Hashable]] = field(default_factory=dict)  # member -> (reason, item, version)
    sent_at: dict[Hashable, float] = field(default_factory=dict)  # event key -> its edit's send time
    notices_unknown: int = 0  # writes whose notices cannot be known: a write since their base went unanswered


def records_expected(edits: list[dict[str, Any]], *, timeline: Timeline, mode: str) -> Expected:
    """What each member must receive for the measured ``edits`` (``edits`` may start with the
    warm-up's, which only tell who wrote which version)."""
    expected = Expected()
    writes = {
        (e["item"], e["version"]): e for e in edits if e["status"] == "ok" and mode == "sync" and e.get("changed")
    }
    for e in edits:
        if not e["measured"] or e["status"] != "ok":
            continue
        if mode == "publish":
            key: Hashable = e["seq"]
        elif e.get("changed"):
            key = (e["item"], e["version"])
        else:
            key = None
        if key is not None:
            expected.sent_at[key] = e["sent"]
            for member in timeline.audiences[e["item"]] | {e["member"]}:
                expected.events.setdefault(member, set()).add(key)
        if mode != "sync":
            continue
        if e.get("lost"):
            expected.notices.setdefault(e["member"], set()).add(("overridden", e["item"], e["version"]))
        if e.get("changed"):
            owed = _overwritten(e, writes)
            if owed is None:
                expected.notices_unknown += 1
            for member in owed or ():
                expected.notices.setdefault(member, set()).add(("overwritten", e["item"], e["version"]))
    return expected


def _overwritten(edit: dict[str, Any], writes: dict[tuple[int, int], dict[str, Any]]) -> set[int] | None:
    """The other members whose values of the fields ``edit`` wrote were written after its base
    (None: one of those versions' writes is unknown)."""
    owed: set[int] = set()
    for version in range(edit["base"] + 1, edit["version"]):
        write = writes.get((edit["item"], version))
        if write is None:
            return None
        if write["member"] != edit["member"] and set(write["changed"]) & set(edit["changed"]):
            owed.add(write["member"])
    return owed


@dataclass
class Match:
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0  # a key received again (the same seq twice, or one write's event twice)
    unexpected: int = 0  # a key this member is not owed (outside the audience)
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Match) -> None:
        self.expected += other.expected
        self.delivered += other.delivered
        self.lost += other.lost
        self.duplicates += other.duplicates
        self.unexpected += other.unexpected
        self.latencies += other.latencies


def records_match(
    owed: AbstractSet[Hashable], receipts: Sequence[tuple[Hashable, float]], sent_at: Mapping[Hashable, float]
) -> Match:
    """One member's receipts ((key, arrival) in arrival order) against the keys it is owed; the
    latency of a delivery is its first arrival minus its edit's send time (one clock: one machine)."""
    match = Match(expected=len(owed))
    seen: set[Hashable] = set()
    for key, arrival in receipts:
        if key in seen:
            match.duplicates += 1
            continue
        seen.add(key)
        if key not in owed:
            match.unexpected += 1
            continue
        match.delivered += 1
        if key in sent_at:
            match.latencies.append(arrival - sent_at[key])
    match.lost = match.expected - match.delivered
    return match


def receipt_key(message: _Incoming) -> tuple[str, Hashable] | None:
    """("event" or "notice", key) for a watched event frame; None for any other."""
    data = message.data or {}
    if message.type == "record.updated":
        return "event", (data.get("id"), data.get("version"))
    if message.type == "record.conflict":
        return "notice", (data.get("reason"), data.get("id"), data.get("version"))
    if message.type in WATCHED:  # a publish's event, or one no edit here owes anybody (unexpected)
        return "event", message.seq
    return None


def leaks(spec: SocketSpec, message: _Incoming) -> bool:
    """A hidden field in an event to a role that may not see it (decision 0027 says never)."""
    if spec.role in CEREMONY_ROLES or not message.data:
        return False
    return any(isinstance(part, dict | list) and HIDDEN_FIELD in part for part in message.data.values())


# --- the editors' process -------------------------------------------------------------------------------


async def edit(
    worker: Worker,
    *,
    timeline: dict[str, Any],
    mode: str,
    rate: float,
    seconds: float,
    measured: bool,
    conflict_every: int = CONFLICT_EVERY,
    seed: int = 18,
) -> dict[str, Any]:
    """Send ``rate`` edits a second for ``seconds`` over the editors held here, in turn, each
    answered or given up after REPLY_WAIT; answers every edit with its reply."""
    if worker.records_state is None:
        versions = {int(item): int(version) for item, version in timeline["versions"].items()}
        worker.records_state = EditState.of(versions, seed=seed)
    state = worker.records_state
    sockets = {sock.spec.member: sock for sock in worker.sockets.values() if sock.spec.member in timeline["editors"]}
    editors = sorted(sockets)
    for sock in sockets.values():
        if sock.replied is None:
            sock.replied = {}
    edits: list[dict[str, Any]] = []
    answers: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for k in range(max(int(rate * seconds), 1)):
        await asyncio.sleep(max(started + k / rate - time.perf_counter(), 0))
        chosen = next_edit(state, editors=editors, conflict_every=conflict_every)
        sock = sockets[chosen.member]
        sent = time.time()
        frame = edit_frame(chosen, mode=mode, topic=timeline["topic"], to=timeline["to"][chosen.item], sent=sent)
        row: dict[str, Any] = {
            "n": chosen.n,
            "member": chosen.member,
            "item": chosen.item,
            "field": chosen.field,
            "base": chosen.base,
            "conflicting": chosen.conflicting,
            "measured": measured,
            "sent": sent,
            "status": "unanswered",
        }
        edits.append(row)
        answers.append(asyncio.create_task(_answer(state, sock, sock.request(frame), row, mode=mode)))
    await asyncio.gather(*answers)
    return {"edits": edits}


async def _answer(
    state: EditState, sock: BenchSocket, waiter: asyncio.Future[_Incoming], row: dict[str, Any], *, mode: str
) -> None:
    ref = f"e{row['n']}"
    try:
        reply = await asyncio.wait_for(waiter, REPLY_WAIT)
    except TimeoutError:
        sock.waiting.pop(ref, None)
        return  # maybe applied, maybe not: nothing of it is expected of anyone
    replied = sock.replied.pop(ref, None) if sock.replied is not None else None
    row["reply_seconds"] = None if replied is None else replied - row["sent"]
    if reply.status != "ok" or not reply.data:
        row["status"] = str((reply.error or {}).get("code", "error"))
        row["error"] = str((reply.error or {}).get("message", ""))[:200]
        return
    row["status"] = "ok"
    data = reply.data
    row["seq"] = data.get("seq")
    if mode == "sync":
        row.update(
            outcome=data.get("outcome"),
            version=data.get("version"),
            changed=list(data.get("changed") or []),
            lost=list(data.get("lost") or []),
        )
        state.learn(item=row["item"], version=int(data["version"]), author=row["member"], changed=row["changed"])
    else:
        row["outcome"] = "published"


async def collect(worker: Worker, *, expected: Expected, wait: float) -> dict[str, Any]:
    """Wait until every member held here has every event and notice it is owed (or the deadline),
    then count."""
    members = [spec.member for spec in worker.specs]
    tally = worker.tally

    def figures() -> tuple[Match, Match]:
        events, notices = Match(), Match()
        for member in members:
            events.add(
                records_match(expected.events.get(member, set()), tally.record_events.get(member, []), expected.sent_at)
            )
            notices.add(records_match(expected.notices.get(member, set()), tally.record_notices.get(member, []), {}))
        return events, notices

    deadline = time.perf_counter() + wait
    events, notices = figures()
    while (events.lost or notices.lost) and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        events, notices = figures()
    return {
        "expected": events.expected,
        "delivered": events.delivered,
        "lost": events.lost,
        "duplicates": events.duplicates,
        "unexpected": events.unexpected,
        "notices_expected": notices.expected,
        "notices_delivered": notices.delivered,
        "notices_lost": notices.lost,
        "notices_unexpected": notices.unexpected,
        "leaked": tally.record_leaks,
        "latencies": events.latencies,
        "last_receipt": tally.last_receipt,
    }


# --- figures ---------------------------------------------------------------------------------------------


def _ms(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    return round(values[min(int(len(values) * fraction), len(values) - 1)] * 1000, 1)


def edit_figures(edits: list[dict[str, Any]]) -> dict[str, Any]:
    """The measured edits' outcomes (by kind, refusals by code) and send-to-reply times."""
    measured = [e for e in edits if e["measured"]]
    outcomes: dict[str, int] = {}
    for e in measured:
        kind = e.get("outcome") if e["status"] == "ok" else e["status"]
        outcomes[str(kind)] = outcomes.get(str(kind), 0) + 1
    replies = sorted(e["reply_seconds"] for e in measured if e.get("reply_seconds") is not None)
    return {
        "edits_sent": len(measured),
        "conflicting_sent": sum(1 for e in measured if e["conflicting"]),
        "outcomes": dict(sorted(outcomes.items())),
        "refusals": sorted({f"{e['status']}: {e.get('error', '')}" for e in measured if e["status"] != "ok"})[:5],
        "replies": len(replies),
        "reply_ms_p50": _ms(replies, 0.50),
        "reply_ms_p95": _ms(replies, 0.95),
        "reply_ms_p99": _ms(replies, 0.99),
        "reply_ms_max": _ms(replies, 1.0),
    }


def latency_figures(latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"latency_ms_p50": _ms(ordered, 0.50), "latency_ms_p99": _ms(ordered, 0.99)}
