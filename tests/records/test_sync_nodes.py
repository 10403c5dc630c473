"""``sync`` across two daphne processes on one Redis: a change made on one node reaches the record's
audience on the other, a race between nodes has one winner and tells the loser, and an atomic batch
is seen on the other node whole or not at all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async

from tests.personas import WeddingParty
from tests.realtime.nodes import Cluster, cluster
from tests.records.node_sockets import NodeSocket, SubscribedSockets
from wedsync.models import Task
from wedsync.permissions import Role

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

RECEIVE_WITHIN = 3.0  # seconds: the tests' normal receive timeout (tests/realtime/conftest.py)


@pytest.fixture
def nodes(tmp_path: Path) -> Any:
    every_role = json.dumps(dict.fromkeys((role.value for role in Role), 100000))
    with cluster(tmp_path, extra_env={"REALTIME_RATE_LIMITS": every_role}) as running:
        yield running


@pytest.fixture
async def on_node(nodes: Cluster, party: WeddingParty) -> AsyncIterator[Any]:
    """``await on_node(member, 0 or 1)``: a socket subscribed to the wedding on that node."""
    sockets = SubscribedSockets(nodes, wedding_id=party.wedding.pk)
    yield sockets.open
    await sockets.close_all()
    for socket in sockets.opened:
        assert not socket.answered_badly() and not socket.other, (socket.replies, socket.other)


async def sync(socket: NodeSocket, party: WeddingParty, **fields: Any) -> dict[str, Any]:
    return await socket.request("sync", topic=f"wedding:{party.wedding.pk}", **fields)


async def created(socket: NodeSocket, party: WeddingParty, kind: str, op_id: str, **changes: Any) -> int:
    reply = await sync(socket, party, record=kind, op_id=op_id, changes=changes)
    assert reply["status"] == "ok" and reply["data"]["outcome"] == "applied", reply
    record_id: int = reply["data"]["id"]
    return record_id


async def test_a_change_on_one_node_reaches_the_audience_on_the_other(party: WeddingParty, on_node: Any) -> None:
    planner = await on_node(party.priya, 0)
    couple, caterer, guest = [await on_node(member, 1) for member in (party.ana, party.carmen, party.gil)]
    item = await created(
        planner, party, "timeline_item", "n1", title="Vows", starts_at="2027-06-12T15:00:00Z",
        ceremony_notes="rings", assigned_vendors=[party.carmen.pk],
    )  # fmt: skip
    for socket in (planner, couple, caterer, guest):
        assert (await socket.next_event(RECEIVE_WITHIN))["type"] == "record.created"

    reply = await sync(
        planner, party, record="timeline_item", id=item, base_version=1, changes={"title": "I do"}, op_id="e1"
    )
    assert reply["data"]["outcome"] == "applied", reply
    seen = {}
    for name, socket in (("couple", couple), ("caterer", caterer), ("guest", guest)):
        event = seen[name] = await socket.next_event(RECEIVE_WITHIN)
        assert (event["type"], event["data"]["version"], event["data"]["values"]["title"]) == (
            "record.updated",
            2,
            "I do",
        )
        assert event["data"]["op_id"] == "e1" and event["data"]["actor"]["member"] == party.priya.pk
    assert seen["couple"]["data"]["values"]["ceremony_notes"] == "rings"
    assert "ceremony_notes" not in seen["caterer"]["data"]["values"]  # the caterer's part is withheld
    assert seen["guest"]["data"] == seen["caterer"]["data"]  # the guest's too: one part, one event
    # Once each: every socket's next event is the chat sent after the change.
    await planner.request("publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "hi"})
    for socket in (couple, caterer, guest):
        assert (await socket.next_event(RECEIVE_WITHIN))["type"] == "chat.message"


async def test_a_race_between_nodes_has_one_winner_and_the_loser_is_told(party: WeddingParty, on_node: Any) -> None:
    couple, planner = await on_node(party.ana, 0), await on_node(party.priya, 1)
    task = await created(planner, party, "task", "t0", title="Chairs")
    for socket in (couple, planner):
        assert (await socket.next_event(RECEIVE_WITHIN))["type"] == "record.created"

    # Tasks are role_hierarchy: whichever arrives first, the couple outranks the planner.
    theirs, mine = await asyncio.gather(
        sync(couple, party, record="task", id=task, base_version=1, changes={"status": "done"}, op_id="c1"),
        sync(planner, party, record="task", id=task, base_version=1, changes={"status": "blocked"}, op_id="p1"),
    )
    assert theirs["status"] == mine["status"] == "ok", (theirs, mine)
    outcomes = sorted((theirs["data"]["outcome"], mine["data"]["outcome"]))
    assert outcomes in (["applied", "overridden"], ["applied", "merged"]), outcomes
    final = await database_sync_to_async(Task.objects.get)(pk=task)
    assert final.status == "done"
    # The planner lost: overridden (the couple came first) or overwritten (the couple came second).
    async with asyncio.timeout(RECEIVE_WITHIN):
        while (event := await planner.next_event(RECEIVE_WITHIN))["type"] != "record.conflict":
            pass
    notice = event["data"]
    assert notice["reason"] in ("overridden", "overwritten") and notice["fields"] == ["status"], notice
    assert notice["current"] == {"status": "done"}, notice


async def test_an_atomic_batch_from_one_node_is_seen_whole_or_not_at_all_on_the_other(
    party: WeddingParty, on_node: Any
) -> None:
    planner, couple = await on_node(party.priya, 0), await on_node(party.ana, 1)
    items = [
        await created(planner, party, "timeline_item", f"n{i}", title=f"Item {i}", starts_at=f"2027-06-12T1{i}:00:00Z")
        for i in range(3)
    ]
    for _ in items:
        assert (await couple.next_event(RECEIVE_WITHIN))["type"] == "record.created"

    def shift(version: int, *, op_prefix: str, hour: int) -> list[dict[str, Any]]:
        return [
            {
                "record": "timeline_item",
                "id": item,
                "base_version": version,
                "changes": {"starts_at": f"2027-06-12T{hour + i}:30:00Z"},
                "op_id": f"{op_prefix}{i}",
            }
            for i, item in enumerate(items)
        ]

    failing = shift(1, op_prefix="x", hour=14)
    failing[2]["changes"] = {"guest": party.gil.pk}  # not a timeline field: the whole batch fails
    reply = await sync(planner, party, atomic=True, ops=failing)
    assert reply["status"] == "error" and reply["error"]["op"] == 2, reply

    reply = await sync(planner, party, atomic=True, ops=shift(1, op_prefix="s", hour=16))
    assert [r["outcome"] for r in reply["data"]["results"]] == ["applied"] * 3, reply
    # The couple's next three events are the batch's, in one run of seqs: nothing of the failed one.
    seen = [await couple.next_event(RECEIVE_WITHIN) for _ in items]
    assert [e["data"]["op_id"] for e in seen] == ["s0", "s1", "s2"], seen
    # In one run of seqs, the couple's every other one: each change's part without ceremony details
    # (for the caterers, florists and guests) is stored just before the planner's own.
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + 6, 2)), seqs
    assert [e["data"]["values"]["starts_at"] for e in seen] == [f"2027-06-12T{16 + i}:30:00Z" for i in range(3)]
