"""Shared records under a random wedding day (issue 18's proof): members of every kind of role, on
two real nodes (daphne processes on one Redis), interleave edits, stale edits, creates, deletes,
atomic batches, resent op ids, lost replies, races and reconnects that resume ``since`` their last
seq, edits over REST (PATCH with If-Match), a coordinator's edits in the admin, and the planner
resolving kept conflicts. After every step (once each member's events have arrived) and at the end:

- each member's records, rebuilt from the ``record.*`` events it received, equal what the database
  says it may see (PROTOCOL.md's audiences, ``ceremony_notes`` only with view_ceremony_details);
- each op got exactly one reply with one outcome, and refusals are the ones the matrix predicts;
- an accepted edit never vanishes silently: whoever lost fields, or had them overwritten by an edit
  that had not seen them, got a ``record.conflict`` notice;
- a resent op id returns the first answer and changes nothing; every op id is applied at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import pytest
from channels.layers import channel_layers
from django.conf import settings as django_settings
from django.test import override_settings
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from realtime.models import Event
from records.models import Conflict, ConflictStatus, Strategy, WeddingStrategy
from records.oversight import record_admin_save
from records.registry import kinds
from records.selectors import wedding_state
from records.services import SyncRefused, actor_for_member
from tests.personas import make_coordinator, make_wedding_party
from tests.realtime.conftest import _bearer
from tests.realtime.nodes import Cluster, cluster
from tests.records.node_sockets import NodeSocket, View
from tests.records.oracle import (
    COUPLE_AND_PLANNER,
    MODELS,
    RECORD_EVENTS,
    audience_breaches,
    hidden_leaks,
    in_audience,
    record_history,
    refusal_predicted,
    rsvp_changes,
    silent_overwrites,
    task_changes,
    timeline_changes,
    withheld_from,
)
from tests.records.test_api import call
from wedsync.models import Member
from wedsync.permissions import Role
from wedsync.settings import channel_layer_config

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

PEOPLE = ("priya", "ana", "victor", "paula", "carmen", "gil")  # planner, couple, venue, two vendors, guest
OUTCOMES = {"applied", "merged", "overridden", "conflict"}
Records = dict[tuple[str, int], tuple[int, dict[str, Any]]]  # (kind, id) -> (version, values) in the database
SETTLE_SECONDS = 10.0  # generous: a missing event fails the step, a slow one only waits


@dataclass
class Person:
    name: str
    member_id: int
    role: str
    token: str
    node: int
    socket: NodeSocket | None = None
    read: int = 0  # events of the current socket folded into the view
    view: View = field(default_factory=View)
    received: list[dict[str, Any]] = field(default_factory=list)  # every event, in arrival order
    queue: list[tuple[dict[str, Any], bool]] = field(default_factory=list)  # (op fields, sent before)
    ops: int = 0


class RecordsMachine(RuleBasedStateMachine):
    cluster: ClassVar[Cluster]
    runner: ClassVar[asyncio.Runner]

    def __init__(self) -> None:
        super().__init__()
        self.people: dict[str, Person] = {}
        self.sockets: list[NodeSocket] = []
        self.answered: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
        self.bases: dict[tuple[int, str], int | None] = {}  # (member, op id) -> base version sent
        self.notices_owed: list[tuple[Person, dict[str, Any]]] = []  # overridden/conflict replies
        self.clean = True  # no step under way: teardown checks only after steps that passed

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    # --- set-up ------------------------------------------------------------------------------------

    @initialize(strategies=st.fixed_dictionaries({name: st.sampled_from([None, *Strategy]) for name in MODELS}))
    def a_wedding_with_records(self, strategies: dict[str, Strategy | None]) -> None:
        self.clean = False
        party = make_wedding_party()
        self.wedding_id = party.wedding.pk
        self.topic = f"wedding:{self.wedding_id}"
        for kind, chosen in strategies.items():
            if chosen is not None:
                WeddingStrategy.objects.create(wedding=party.wedding, kind=kind, strategy=chosen)
        for index, name in enumerate(PEOPLE):
            member = getattr(party, name)
            self.people[name] = Person(name, member.pk, member.role, _bearer(member), node=index % 2)
        self.vendors = [party.victor.pk, party.paula.pk, party.carmen.pk]
        self.members = [party.paula.pk, party.carmen.pk, party.gil.pk]
        self.guest = party.gil.pk
        self.coordinator = make_coordinator(party.wedding, name=f"cora-{self.wedding_id}")
        for person in self.people.values():
            self._connect(person, since=None)
        priya, gil = self.people["priya"], self.people["gil"]
        for changes in (
            {"title": "Vows", "starts_at": "2027-06-12T15:00:00+02:00", "assigned_vendors": self.vendors[1:]},
            {"title": "Cake", "starts_at": "2027-06-12T21:00:00+02:00", "assigned_vendors": [self.vendors[0]]},
        ):
            self._submit(priya, self._op(priya, "timeline_item", None, None, changes))
        self._submit(priya, self._op(priya, "task", None, None, {"title": "Chairs", "assignee": party.carmen.pk}))
        self._submit(gil, self._op(gil, "rsvp", None, None, {"status": "attending"}))

    def _connect(self, person: Person, *, since: int | None) -> None:
        url = self.cluster.nodes[person.node].url

        async def connect() -> tuple[NodeSocket, dict[str, Any]]:
            socket = await NodeSocket.open(url, person.token)
            return socket, await socket.request("subscribe", topic=self.topic, since=since)

        person.socket, reply = self.run(connect())
        self.sockets.append(person.socket)
        person.read = 0
        assert reply["status"] == "ok" and reply["data"]["recovered"], reply
        queued, person.queue = person.queue, []
        for fields, sent_before in queued:  # the offline queue, in order, as a phone resends it
            self._send(person, fields, resent=sent_before)

    def _close(self, person: Person) -> None:
        assert person.socket is not None
        self.run(person.socket.close())
        self._absorb(person)
        person.socket = None

    # --- ops -----------------------------------------------------------------------------------------

    def _op(
        self,
        person: Person,
        kind: str,
        record_id: int | None,
        base: int | None,
        changes: dict[str, Any] | None,
        *,
        delete: bool = False,
    ) -> dict[str, Any]:
        person.ops += 1
        op_id = f"{person.name}-{person.ops}"
        self.bases[(person.member_id, op_id)] = base
        op: dict[str, Any] = {"record": kind, "id": record_id, "base_version": base, "op_id": op_id}
        if delete:
            op["delete"] = True
        else:
            op["changes"] = changes
        return op

    def _submit(self, person: Person, op: dict[str, Any]) -> None:
        if person.socket is None:
            person.queue.append((op, False))
        else:
            self._send(person, op, resent=False)

    def _predicted(self, person: Person, op: dict[str, Any]) -> str | None:
        return refusal_predicted(op, role=person.role, member_id=person.member_id)

    def _send(self, person: Person, op: dict[str, Any], *, resent: bool) -> None:
        assert person.socket is not None
        predicted = self._predicted(person, op)
        reply = self.run(person.socket.request("sync", topic=self.topic, **op))
        self._check_reply(person, op, reply, predicted, resent=resent)

    def _check_reply(
        self, person: Person, op: dict[str, Any], reply: dict[str, Any], predicted: str | None, *, resent: bool
    ) -> None:
        if reply["status"] == "error":
            assert reply["error"]["code"] == predicted, (op, reply)
            return
        data = reply["data"]
        assert (data["op_id"], data["record"]) == (op["op_id"], op["record"]), (op, data)
        assert op["id"] is None or data["id"] == op["id"], (op, data)
        if data.get("duplicate"):
            assert resent, (op, data)  # the first send went through; its reply was lost
        else:
            assert predicted is None, (op, predicted, data)
            self.answered[person.name].append((op, data))
        assert data["outcome"] in OUTCOMES, data
        sent = set(op.get("changes") or {})
        changed, lost = set(data.get("changed", [])), set(data.get("lost", []))
        assert not changed & lost and (op.get("delete") or (changed | lost) <= sent), (op, data)
        assert data["outcome"] != "applied" or not lost, data
        assert not hidden_leaks(data, role=person.role), data
        if data["outcome"] in ("overridden", "conflict"):
            self.notices_owed.append((person, data))

    # --- choosing what to change ---------------------------------------------------------------------

    # Every draw has the same shape whatever the nodes answered (an index, changes for every kind):
    # a draw that depended on the records a member saw would differ between two runs of the same
    # choices (ids, races), which Hypothesis refuses as a flaky strategy.

    @staticmethod
    def _pick(data: st.DataObject, label: str) -> int:
        return data.draw(st.integers(0, 255), label=label)

    def _known(self, person: Person, data: st.DataObject, kinds_: tuple[str, ...] = tuple(MODELS)) -> Any:
        pick = self._pick(data, "record")
        keys = sorted(key for key in person.view.records if key[0] in kinds_)
        return keys[pick % len(keys)] if keys else None

    def _changes(self, data: st.DataObject, *, creating: bool = False) -> dict[str, dict[str, Any]]:
        """Changes for each kind, of which the caller uses the one of its record's kind."""
        strategies = {
            "timeline_item": timeline_changes(self.vendors, creating=creating),
            "task": task_changes(self.members, creating=creating),
            "rsvp": rsvp_changes(self.guest, creating=creating),
        }
        drawn = {kind: data.draw(strategies[kind], label=f"changes of a {kind}") for kind in MODELS}
        if data.draw(st.booleans(), label="without starts_at") and creating:
            drawn["timeline_item"].pop("starts_at", None)
        return drawn

    # --- rules ---------------------------------------------------------------------------------------

    def _edit_op(self, person: Person, stale: int, data: st.DataObject) -> dict[str, Any] | None:
        """A change of a record the member knows, based ``stale`` versions back; None: none known."""
        key, changes = self._known(person, data), self._changes(data)
        if key is None:
            return None
        base = max(1, person.view.records[key]["version"] - stale)
        return self._op(person, key[0], key[1], base, changes[key[0]])

    @rule(who=st.sampled_from(PEOPLE), stale=st.integers(0, 2), data=st.data())
    def edit(self, who: str, stale: int, data: st.DataObject) -> None:
        self.clean = False
        person = self.people[who]
        op = self._edit_op(person, stale, data)
        if op is not None:
            self._submit(person, op)

    @rule(who=st.sampled_from(PEOPLE), kind=st.sampled_from(tuple(MODELS)), data=st.data())
    def create(self, who: str, kind: str, data: st.DataObject) -> None:
        self.clean = False
        person = self.people[who]
        self._submit(person, self._op(person, kind, None, None, self._changes(data, creating=True)[kind]))

    @rule(who=st.sampled_from(PEOPLE), stale=st.integers(0, 1), data=st.data())
    def delete(self, who: str, stale: int, data: st.DataObject) -> None:
        self.clean = False
        person = self.people[who]
        key = self._known(person, data)
        if key is None:
            return
        base = max(1, person.view.records[key]["version"] - stale)
        self._submit(person, self._op(person, key[0], key[1], base, None, delete=True))

    @rule(who=st.sampled_from(PEOPLE), data=st.data())
    def batch(self, who: str, data: st.DataObject) -> None:
        self.clean = False
        person = self.people[who]
        picks = data.draw(st.lists(st.integers(0, 255), min_size=2, max_size=3), label="records")
        changes = [self._changes(data) for _ in picks]
        keys = sorted(person.view.records)
        chosen = list(dict.fromkeys(keys[pick % len(keys)] for pick in picks)) if keys else []
        if person.socket is None or len(chosen) < 2:
            return
        ops = [
            self._op(person, kind, record_id, person.view.records[(kind, record_id)]["version"], drawn[kind])
            for (kind, record_id), drawn in zip(chosen, changes, strict=False)
        ]
        predicted = [self._predicted(person, op) for op in ops]
        head = self._head()
        reply = self.run(person.socket.request("sync", topic=self.topic, atomic=True, ops=ops))
        if reply["status"] == "error":
            error = reply["error"]
            refused = next(((i, code) for i, code in enumerate(predicted) if code), None)
            if error["code"] == "conflict":  # a stale op that would not fully apply, before any refusal
                assert refused is None or error["op"] < refused[0], (ops, predicted, error)
            else:
                assert (error["op"], error["code"]) == refused, (ops, predicted, error)
            assert not self._events_of(person, [op["op_id"] for op in ops], after=head), "a failed batch emitted"
            return
        assert not any(predicted), (ops, predicted, reply)
        results = reply["data"]["results"]
        assert [r["op_id"] for r in results] == [op["op_id"] for op in ops], results
        assert all(r["outcome"] in ("applied", "merged") for r in results), results
        self.answered[person.name].append(({"atomic": True, "ops": ops}, reply["data"]))

    @rule(who=st.sampled_from(PEOPLE), data=st.data())
    def resend_an_answered_op(self, who: str, data: st.DataObject) -> None:
        self.clean = False
        person = self.people[who]
        pick = self._pick(data, "op")
        if person.socket is None or not self.answered[who]:
            return
        op, first = self.answered[who][pick % len(self.answered[who])]
        head = self._head()
        reply = self.run(person.socket.request("sync", topic=self.topic, **op))
        assert reply["status"] == "ok", (op, reply)
        if op.get("atomic"):
            assert reply["data"] == {"results": [{**r, "duplicate": True} for r in first["results"]]}
            op_ids = [o["op_id"] for o in op["ops"]]
        else:
            assert reply["data"] == {**first, "duplicate": True}, (first, reply)
            op_ids = [op["op_id"]]
        assert not self._events_of(person, op_ids, after=head), "a resent op id changed something"

    @rule(who=st.sampled_from(PEOPLE), data=st.data())
    def edit_and_lose_the_reply(self, who: str, data: st.DataObject) -> None:
        self.clean = False
        person = self.people[who]
        key, changes = self._known(person, data), self._changes(data)
        if person.socket is None or key is None:
            return
        op = self._op(person, key[0], key[1], person.view.records[key]["version"], changes[key[0]])
        socket = person.socket
        socket.abandoned.add(self.run(socket.send("sync", topic=self.topic, **op)))
        self._close(person)  # gone before the reply: the phone resends the op when it is back
        person.queue.append((op, True))

    @rule(first=st.sampled_from(PEOPLE), second=st.sampled_from(PEOPLE), data=st.data())
    def race(self, first: str, second: str, data: st.DataObject) -> None:
        self.clean = False
        one, two = self.people[first], self.people[second]
        pick, changes = self._pick(data, "record"), [self._changes(data) for _ in range(2)]
        if first == second or one.socket is None or two.socket is None:
            return
        # Not tasks: a reassignment in one edit changes whether the other is allowed at all.
        shared = sorted(k for k in one.view.records.keys() & two.view.records.keys() if k[0] != "task")
        if not shared:
            return
        kind, record_id = shared[pick % len(shared)]
        ops = [
            (p, self._op(p, kind, record_id, p.view.records[(kind, record_id)]["version"], drawn[kind]))
            for p, drawn in zip((one, two), changes, strict=True)
        ]
        predicted = [self._predicted(p, op) for p, op in ops]

        async def both() -> list[dict[str, Any]]:
            return list(
                await asyncio.gather(
                    *(p.socket.request("sync", topic=self.topic, **op) for p, op in ops if p.socket is not None)
                )
            )

        replies = self.run(both())
        for (person, op), reply, expected in zip(ops, replies, predicted, strict=True):
            self._check_reply(person, op, reply, expected, resent=False)
        winners = [
            r for r in replies if r["status"] == "ok" and r["data"]["outcome"] == "applied" and r["data"]["changed"]
        ]
        assert len(winners) <= 1, replies  # same base: only the first to arrive is fresh

    @rule(who=st.sampled_from(PEOPLE), stale=st.integers(0, 2), data=st.data())
    def edit_over_rest(self, who: str, stale: int, data: st.DataObject) -> None:
        """The same edit as a PATCH with If-Match: the REST door and the socket's are one engine."""
        self.clean = False
        person = self.people[who]
        op = self._edit_op(person, stale, data)
        if op is None:
            return
        predicted = self._predicted(person, op)
        path = f"/api/v1/weddings/{self.wedding_id}/records/{op['record']}/{op['id']}/"
        response = call(
            self._member(person), "patch", path, op["changes"], if_match=op["base_version"], key=op["op_id"]
        )
        body = response.json()
        if response.status_code not in (200, 409):  # 409 is a conflict kept: an answer, not a refusal
            assert body["error"]["code"] == predicted, (op, response.status_code, body)
            return
        reply = {"status": "ok", "data": {name: value for name, value in body.items() if name != "error"}}
        self._check_reply(person, op, reply, predicted, resent=False)

    @rule(resolution=st.sampled_from(["theirs", "mine"]), data=st.data())
    def resolve_a_conflict_over_rest(self, resolution: str, data: st.DataObject) -> None:
        """The planner settles a kept conflict: the record changes (mine) or stays (theirs) for all."""
        self.clean = False
        pick = self._pick(data, "conflict")
        open_ = list(
            Conflict.objects.filter(wedding_id=self.wedding_id, status=ConflictStatus.OPEN)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not open_:
            return
        conflict_id = open_[pick % len(open_)]
        path = f"/api/v1/weddings/{self.wedding_id}/conflicts/{conflict_id}/resolve/"
        response = call(self._member(self.people["priya"]), "post", path, {"resolution": resolution})
        body = response.json()
        # "mine" applies the kept side through the engine now, which may no longer fit the record.
        assert response.status_code == 200 or (resolution, body["error"]["code"]) == ("mine", "invalid"), body
        if response.status_code == 200:
            assert body["conflict"]["status"] == "resolved", body

    @rule(stale=st.integers(0, 2), data=st.data())
    def edit_in_the_admin(self, stale: int, data: st.DataObject) -> None:
        """A coordinator edits from the admin (staff: a planner's view and rank, as no member): the
        same engine, so members hear of it, and those it overwrote are told, like any edit."""
        self.clean = False
        planner = self.people["priya"]  # staff see what the planner sees
        key, changes = self._known(planner, data), self._changes(data)
        if key is None:
            return
        base = max(1, planner.view.records[key]["version"] - stale)
        predicted = refusal_predicted(
            {"record": key[0], "id": key[1], "changes": changes[key[0]]}, role=Role.PLANNER.value, member_id=0
        )
        refused: SyncRefused | None = None
        try:
            result = record_admin_save(
                user=self.coordinator,
                kind=key[0],
                wedding_id=self.wedding_id,
                record_id=key[1],
                base_version=base,
                changes=changes[key[0]],
            )
        except SyncRefused as refusal:
            refused = refusal
        assert (refused and refused.code) == predicted, (key, changes[key[0]], refused and refused.message)
        if refused is None:
            assert result.reply["outcome"] in OUTCOMES, result.reply

    @staticmethod
    def _member(person: Person) -> Member:
        return Member.objects.select_related("user").get(pk=person.member_id)

    @rule(who=st.sampled_from(PEOPLE))
    def disconnect(self, who: str) -> None:
        self.clean = False
        if self.people[who].socket is not None:
            self._close(self.people[who])

    @rule(who=st.sampled_from(PEOPLE), node=st.integers(0, 1))
    def reconnect(self, who: str, node: int) -> None:
        self.clean = False
        person = self.people[who]
        if person.socket is not None:
            self._close(person)
        person.node = node
        self._connect(person, since=person.view.last_seq)

    # --- after every step: the dust settles, then the views are compared -----------------------------

    def _head(self) -> int:
        return max(Event.objects.filter(wedding_id=self.wedding_id).values_list("seq", flat=True), default=0)

    def _events_of(self, person: Person, op_ids: list[str], *, after: int) -> list[int]:
        return list(
            Event.objects.filter(
                wedding_id=self.wedding_id, seq__gt=after, sender_member_id=person.member_id, data__op_id__in=op_ids
            ).values_list("seq", flat=True)
        )

    def _expected_seqs(self, person: Person) -> set[int]:
        rows = Event.objects.filter(wedding_id=self.wedding_id).values_list("seq", "audience_roles", "audience_members")
        return {seq for seq, roles, members in rows if person.role in roles or person.member_id in members}

    def _absorb(self, person: Person) -> None:
        if person.socket is None:
            return
        for event in person.socket.events[person.read :]:
            leaked = hidden_leaks(event["data"], role=person.role)
            assert not leaked, (person.name, leaked, event)
            person.view.apply(event)
            person.received.append(event)
        person.read = len(person.socket.events)

    def _settle(self) -> Records:
        """Wait until each online member has every event the log holds for it, and read the records
        then; again if something committed meanwhile (an op whose sender left before its reply)."""
        for _attempt in range(5):
            head = self._head()
            online = [p for p in self.people.values() if p.socket is not None]
            expected = {p.name: {seq for seq in self._expected_seqs(p) if seq <= head} for p in online}

            try:
                self.run(self._arrived(online, expected))
            except TimeoutError:
                missing = {p.name: sorted(expected[p.name] - {e["seq"] for e in p.received}) for p in online}
                raise AssertionError(f"events never arrived within {SETTLE_SECONDS} s: {missing}") from None
            records = self._oracle()
            if self._head() == head and all(e["seq"] <= head for p in online for e in p.received):
                return records
        raise AssertionError("the wedding never stopped changing")

    async def _arrived(self, online: list[Person], expected: dict[str, set[int]]) -> None:
        async with asyncio.timeout(SETTLE_SECONDS):
            for person in online:
                assert person.socket is not None
                self._absorb(person)
                while not expected[person.name] <= {e["seq"] for e in person.received}:
                    await person.socket.wait_for_events(len(person.socket.events) + 1, SETTLE_SECONDS)
                    self._absorb(person)

    def _oracle(self) -> Records:
        records = {}
        for kind in kinds():
            for record in kind.queryset(wedding_id=self.wedding_id):
                records[(kind.name, record.pk)] = (record.version, kind.values_of(record))
        return records

    def _compare(self, people: list[Person], records: Records) -> None:
        for person in people:
            assert not person.view.problems, (person.name, person.view.problems)
            hidden = withheld_from(person.role)
            mine = {
                key: {"version": version, "values": {k: v for k, v in values.items() if k not in hidden}}
                for key, (version, values) in records.items()
                if in_audience(key[0], values, member_id=person.member_id, role=person.role)
            }
            for key, record in mine.items():
                assert person.view.records.get(key) == record, (person.name, key, person.view.records.get(key), record)
            # Nothing more than that either: everything for the couple and the planner, and the
            # whole timeline for everyone (its audience is every role that may view it).
            every = person.role in COUPLE_AND_PLANNER
            whole = {key for key in mine if every or key[0] == "timeline_item"}
            held = {key for key in person.view.records if every or key[0] == "timeline_item"}
            assert held == whole, (person.name, held ^ whole)

    @invariant()
    def every_view_equals_the_database(self) -> None:
        if not self.people:
            return
        records = self._settle()
        self._compare([p for p in self.people.values() if p.socket is not None], records)
        self.clean = True  # no step under way: teardown checks only after steps that passed

    # --- when the dust has settled ---------------------------------------------------------------------

    def teardown(self) -> None:
        if not self.people:
            return
        if not self.clean:  # a step failed: that failure is the report, not what follows from it
            for person in self.people.values():
                if person.socket is not None:
                    self.run(person.socket.close())
            return
        try:
            for person in self.people.values():
                if person.socket is None:
                    self._connect(person, since=person.view.last_seq)
            records = self._settle()
            self._compare(list(self.people.values()), records)
            self._check_snapshots(records)
            self._check_deliveries()
            self._check_notices()
            self._check_op_ids_applied_once()
        finally:
            for person in self.people.values():
                if person.socket is not None:
                    self._close(person)
        for socket in self.sockets:
            assert not socket.answered_badly(), socket.answered_badly()
            assert not socket.other, socket.other

    def _check_deliveries(self) -> None:
        history = record_history(self.people["priya"].received)  # the planner sees every change
        for person in self.people.values():
            assert sorted(e["seq"] for e in person.received) == sorted(self._expected_seqs(person)), person.name
            breaches = audience_breaches(person.received, history, member_id=person.member_id, role=person.role)
            assert not breaches, (person.name, breaches)

    def _check_notices(self) -> None:
        notices = {
            p.member_id: [e["data"] for e in p.received if e["type"] == "record.conflict"] for p in self.people.values()
        }
        for person, reply in self.notices_owed:
            key = (reply["record"], reply["id"], reply["version"])
            mine = [n for n in notices[person.member_id] if (n["record"], n["id"], n["version"]) == key]
            if reply["outcome"] == "conflict":
                assert any(n["conflict"] == reply["conflict"] for n in mine), (person.name, reply, mine)
            else:
                assert any(n["reason"] == "overridden" and n["fields"] == reply["lost"] for n in mine), (reply, mine)
        # An edit that had not seen a value and replaced it (or deleted its record) told its writer.
        roles = {p.member_id: p.role for p in self.people.values()}
        history = record_history(self.people["priya"].received)
        silent = silent_overwrites(history, bases=self.bases, notices=notices, roles=roles)
        assert not silent, silent

    def _check_snapshots(self, records: Records) -> None:
        """The state a client reloads from (GET .../state/) agrees with the events, record for record."""
        for person in self.people.values():
            state = wedding_state(actor=actor_for_member(Member.objects.get(pk=person.member_id)))
            for kind, shown in state["records"].items():
                for record in shown:
                    key = (kind, record["id"])
                    # A record the state shows is one whose changes the member hears of, and as heard.
                    assert in_audience(kind, records[key][1], member_id=person.member_id, role=person.role), key
                    assert person.view.records[key] == {"version": record["version"], "values": record["values"]}

    def _check_op_ids_applied_once(self) -> None:
        applied: dict[tuple[int, str], set[tuple[str, int, int]]] = defaultdict(set)
        rows = Event.objects.filter(wedding_id=self.wedding_id, type__in=RECORD_EVENTS).values_list(
            "sender_member_id", "data"
        )
        for sender, data in rows:
            if data["op_id"] is not None:  # a conflict's resolution applies without an op id
                applied[(sender, data["op_id"])].add((data["record"], data["id"], data["version"]))
        assert all(len(changes) == 1 for changes in applied.values()), applied


@contextlib.contextmanager
def layer_on(redis_url: str) -> Iterator[None]:
    """This process's channel layer on the nodes' Redis, as a REST or admin process shares a
    deployment's: its events then reach the nodes live, not by the nodes' heads poll."""
    kind = cast(Literal["core", "pubsub"], django_settings.REALTIME_CHANNEL_LAYER)
    channel_layers.backends.clear()
    try:
        with override_settings(CHANNEL_LAYERS={"default": channel_layer_config(redis_url=redis_url, kind=kind)}):
            yield
    finally:
        channel_layers.backends.clear()  # the next test's layer is made from its own settings


@pytest.fixture
def budgets(settings: Any) -> dict[str, int]:
    """Every role's budget lifted, here for the REST edits this process serves and on the nodes
    (budgets have tests of their own)."""
    lifted = dict.fromkeys((role.value for role in Role), 100000)
    settings.REALTIME_RATE_LIMITS = lifted
    return lifted


def test_records_stay_consistent_across_two_nodes_whatever_members_do(tmp_path: Path, budgets: dict[str, int]) -> None:
    every_role = json.dumps(budgets)
    with (
        cluster(tmp_path, extra_env={"REALTIME_RATE_LIMITS": every_role}) as nodes,
        layer_on(nodes.redis.url),
        asyncio.Runner() as runner,
    ):
        RecordsMachine.cluster, RecordsMachine.runner = nodes, runner
        run_state_machine_as_test(
            RecordsMachine,
            # No shrinking: an example takes seconds on real nodes, so shrinking one would outlast the
            # test's timeout; the failing steps are printed as they ran.
            settings=settings(
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
                report_multiple_bugs=False,
                max_examples=15,
                stateful_step_count=30,
                deadline=None,
                database=None,  # an example replayed on other nodes takes other paths: nothing to keep
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
