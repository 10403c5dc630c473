"""The ``sync`` op through the real ASGI application: replies, events to the record's audience,
resent op ids, atomic batches and refusals that leave the socket open."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.factories import TaskFactory, TimelineItemFactory
from tests.personas import WeddingParty
from tests.realtime.conftest import Client
from wedsync.models import Task, TimelineItem

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_postgres, pytest.mark.requires_redis]


@database_sync_to_async
def timeline_item(party: WeddingParty) -> TimelineItem:
    item = TimelineItemFactory(wedding=party.wedding, title="First dance", ceremony_notes="Rings after vows")
    item.assigned_vendors.set([party.carmen])
    return item


async def test_a_sync_is_answered_and_reaches_the_records_audience_each_part_once(party: WeddingParty, sockets) -> None:
    item = await timeline_item(party)
    planner, caterer, guest, florist = [await sockets(m) for m in (party.priya, party.carmen, party.gil, party.flora)]
    for client in (planner, caterer, guest, florist):
        await client.subscribe(party.wedding.pk)
    topic = f"wedding:{party.wedding.pk}"
    reply = await planner.request(
        "sync", topic=topic, record="timeline_item", id=item.pk, base_version=1, changes={"title": "Dance"}, op_id="o1"
    )
    assert reply["status"] == "ok", reply
    data = reply["data"]
    assert (data["outcome"], data["version"], data["changed"], data["values"]["title"]) == (
        "applied",
        2,
        ["title"],
        "Dance",
    )
    seen = await planner.receive()
    assert (seen["type"], seen["data"]["values"]["ceremony_notes"]) == ("record.updated", "Rings after vows")
    hers = await caterer.receive()
    assert hers["type"] == "record.updated" and "ceremony_notes" not in hers["data"]["values"]
    assert hers["data"]["op_id"] == "o1" and hers["data"]["actor"]["member"] == party.priya.pk
    # Every role may view the timeline, so every role hears of it: without ceremony details here.
    for client in (guest, florist):
        assert (await client.receive())["data"] == hers["data"]
    for client in (planner, caterer, guest, florist):
        assert await client.nothing_more()
    again = await planner.request(
        "sync", topic=topic, record="timeline_item", id=item.pk, base_version=1, changes={"title": "Dance"}, op_id="o1"
    )
    assert again["data"] == {**data, "duplicate": True}
    assert await caterer.nothing_more() and await planner.nothing_more()


async def test_an_atomic_batch_failing_sends_nothing_and_names_the_op(party: WeddingParty, sockets) -> None:
    item = await timeline_item(party)
    task = await database_sync_to_async(TaskFactory)(wedding=party.wedding)
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    topic = f"wedding:{party.wedding.pk}"
    ops = [
        {"record": "timeline_item", "id": item.pk, "base_version": 1, "changes": {"title": "x"}, "op_id": "a"},
        {"record": "task", "id": task.pk, "base_version": 1, "changes": {"status": "nope"}, "op_id": "b"},
    ]
    reply = await planner.request("sync", topic=topic, atomic=True, ops=ops)
    assert reply["status"] == "error" and reply["error"]["code"] == "invalid" and reply["error"]["op"] == 1
    assert await planner.nothing_more()
    ops[1]["changes"] = {"status": "done"}
    reply = await planner.request("sync", topic=topic, atomic=True, ops=ops)
    assert [r["outcome"] for r in reply["data"]["results"]] == ["applied", "applied"]
    assert (await database_sync_to_async(Task.objects.get)(pk=task.pk)).status == "done"


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"record": "timeline_item", "id": 1, "base_version": 1, "changes": {"title": "x"}}, "invalid", "op_id"),
        ({"record": "timeline_item", "op_id": "z", "changes": {"colour": "red"}}, "invalid", "colour"),
        ({"record": "timeline_item", "op_id": "z", "changes": {"title": "No start"}}, "invalid", "starts_at"),
        ({"atomic": True, "record": "task", "op_id": "z", "ops": [{"record": "task", "op_id": "y"}]}, "invalid", "ops"),
        ({"ops": [{"record": "task", "op_id": "y"}]}, "invalid", "atomic"),
        (
            {"record": "task", "id": 10**12, "base_version": 1, "changes": {"status": "done"}, "op_id": "z"},
            "not_found",
            "task",
        ),
    ],
)
async def test_bad_syncs_are_refused_with_a_code_and_the_socket_stays(
    party: WeddingParty, sockets, fields: dict, code: str, words: str
) -> None:
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    reply = await planner.request("sync", topic=f"wedding:{party.wedding.pk}", **fields)
    assert reply["status"] == "error" and reply["error"]["code"] == code and words in reply["error"]["message"]
    assert (await planner.request("heartbeat"))["status"] == "ok"


async def test_sync_before_subscribe_is_not_subscribed(party: WeddingParty, sockets) -> None:
    planner: Client = await sockets(party.priya)
    reply = await planner.request(
        "sync", topic=f"wedding:{party.wedding.pk}", record="task", changes={"title": "x"}, op_id="q"
    )
    assert reply["error"]["code"] == "not_subscribed"


async def test_retired_record_types_are_refused_pointing_at_sync(party: WeddingParty, sockets) -> None:
    guest: Client = await sockets(party.gil)
    await guest.subscribe(party.wedding.pk)
    for type_name, data in (("rsvp.updated", {"status": "attending"}), ("task.updated", {"task": 1})):
        reply = await guest.request("publish", topic=f"wedding:{party.wedding.pk}", type=type_name, data=data)
        assert reply["error"]["code"] == "invalid" and "sync" in reply["error"]["message"]
