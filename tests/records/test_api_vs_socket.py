"""REST and the socket's ``sync`` are one engine: a stale edit by either against an edit by the
other is resolved the same way and told the same way; they share op ids and the rate budget; a
failed REST batch sends nothing; and the state snapshot plus a resume ``since`` its seq misses
nothing and repeats nothing. Through the real ASGI application (sockets) and the API in a thread."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from realtime.models import Event
from records.models import Strategy, WeddingStrategy
from tests.factories import RsvpFactory, TaskFactory, TimelineItemFactory
from tests.personas import WeddingParty
from tests.realtime.conftest import Client
from tests.records.test_api import call, record_url, url
from wedsync.models import Member

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_postgres, pytest.mark.requires_redis]

rest = database_sync_to_async(call)


async def until(client: Client, event_type: str) -> dict[str, Any]:
    """The next event of ``event_type`` this socket receives (others before it are passed over)."""
    while True:
        frame = await client.receive()
        if frame.get("type") == event_type:
            return frame


async def edit(
    via: str, client: Client, member: Member, kind: str, record_id: int, changes: dict[str, Any], op_id: str
) -> dict[str, Any]:
    """A change based on version 1, by socket or REST; the reply's data either way (REST: checking
    that the status fits the outcome)."""
    if via == "socket":
        reply = await client.request(
            "sync",
            topic=f"wedding:{member.wedding_id}",
            record=kind,
            id=record_id,
            base_version=1,
            changes=changes,
            op_id=op_id,
        )
        assert reply["status"] == "ok", reply
        data: dict[str, Any] = reply["data"]
        return data
    response = await rest(member, "patch", record_url_of(member, kind, record_id), changes, if_match=1, key=op_id)
    body: dict[str, Any] = response.json()
    assert response.status_code == (409 if body["outcome"] == "conflict" else 200), body
    return {name: value for name, value in body.items() if name != "error"}


def record_url_of(member: Member, kind: str, record_id: int) -> str:
    return f"/api/v1/weddings/{member.wedding_id}/records/{kind}/{record_id}/"


@database_sync_to_async
def make_record(party: WeddingParty, kind: str, strategy: str | None) -> int:
    if strategy is not None:
        WeddingStrategy.objects.create(wedding=party.wedding, kind=kind, strategy=strategy)
    if kind == "timeline_item":
        return int(TimelineItemFactory(wedding=party.wedding, title="First dance").pk)
    if kind == "task":
        return int(TaskFactory(wedding=party.wedding, title="Bouquets").pk)
    return int(RsvpFactory(guest=party.gil).pk)


# (kind, strategy chosen or None for the default, first author and change, second author and change,
# the second's outcome, the value the record ends with, who gets a record.conflict notice)
CASES = {
    "field_merge_other_field": (
        "timeline_item",
        None,
        ("priya", {"title": "P"}),
        ("paula", {"location": "reception_hall"}),
        "merged",
        ("title", "P"),
        None,
    ),
    "field_merge_lower_rank_loses": (
        "timeline_item",
        None,
        ("priya", {"title": "P"}),
        ("paula", {"title": "Q"}),
        "overridden",
        ("title", "P"),
        "second",
    ),
    "role_hierarchy_lower_rank_loses": (
        "task",
        None,
        ("ana", {"title": "A"}),
        ("priya", {"title": "P", "status": "blocked"}),
        "overridden",
        ("status", "todo"),
        "second",
    ),
    "last_write_wins": (
        "rsvp",
        None,
        ("gil", {"status": "attending"}),
        ("priya", {"status": "declined"}),
        "merged",
        ("status", "declined"),
        "first",
    ),
    "manual": (
        "timeline_item",
        Strategy.MANUAL,
        ("priya", {"title": "P"}),
        ("paula", {"title": "Q"}),
        "conflict",
        ("title", "P"),
        "second",
    ),
}


@pytest.mark.parametrize("first_via", ["socket", "rest"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_stale_edit_is_resolved_alike_whether_it_comes_by_socket_or_rest(
    party: WeddingParty, sockets, case: str, first_via: str
) -> None:
    kind, strategy, (first_name, first_changes), (second_name, second_changes), outcome, (field, value), told = CASES[
        case
    ]
    record_id = await make_record(party, kind, strategy)
    first, second = getattr(party, first_name), getattr(party, second_name)
    clients = {name: await sockets(member) for name, member in ((first_name, first), (second_name, second))}
    for client in clients.values():
        await client.subscribe(party.wedding.pk)
    second_via = "rest" if first_via == "socket" else "socket"
    before = await edit(first_via, clients[first_name], first, kind, record_id, first_changes, "op-1")
    assert before["outcome"] == "applied"
    after = await edit(second_via, clients[second_name], second, kind, record_id, second_changes, "op-2")
    assert after["outcome"] == outcome
    assert after["values"][field] == value
    state = (await rest(second, "get", record_url_of(second, kind, record_id))).json()
    assert (state["values"][field], state["version"]) == (value, after["version"])
    if told is not None:
        notice = await until(clients[first_name if told == "first" else second_name], "record.conflict")
        expected = {"first": "overwritten", "second": "conflict" if outcome == "conflict" else "overridden"}[told]
        assert notice["data"]["reason"] == expected and notice["data"]["id"] == record_id


async def test_socket_and_rest_share_op_ids(party: WeddingParty, sockets) -> None:
    record_id = await make_record(party, "task", None)
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    by_socket = await edit("socket", planner, party.priya, "task", record_id, {"status": "done"}, "queued-7")
    resent = await rest(
        party.priya, "patch", record_url(party, "task", record_id), {"status": "done"}, if_match=1, key="queued-7"
    )
    assert resent.status_code == 200 and resent.json() == {**by_socket, "duplicate": True}
    await until(planner, "record.updated")  # the socket's own change
    assert await planner.nothing_more()


async def test_socket_and_rest_spend_one_rate_budget(party: WeddingParty, sockets, settings) -> None:
    settings.REALTIME_RATE_LIMITS = {**settings.REALTIME_RATE_LIMITS, "guest": 1}
    record_id = await make_record(party, "rsvp", None)
    guest = await sockets(party.gil)
    await guest.subscribe(party.wedding.pk)
    applied = await rest(party.gil, "patch", record_url(party, "rsvp", record_id), {"meal": "fish"}, if_match=1)
    assert applied.status_code == 200
    reply = await guest.request(
        "sync",
        topic=f"wedding:{party.wedding.pk}",
        record="rsvp",
        id=record_id,
        base_version=2,
        changes={"meal": "beef"},
        op_id="s1",
    )
    assert reply["error"]["code"] == "rate_limited"


async def test_a_failed_rest_batch_sends_nothing_and_a_good_one_everything(party: WeddingParty, sockets) -> None:
    item_id = await make_record(party, "timeline_item", None)
    task_id = await make_record(party, "task", None)
    planner, couple = await sockets(party.priya), await sockets(party.ana)
    for client in (planner, couple):
        await client.subscribe(party.wedding.pk)
    ops = [
        {"record": "timeline_item", "id": item_id, "base_version": 1, "changes": {"title": "Shifted"}},
        {"record": "task", "id": task_id, "base_version": 1, "changes": {"assignee": 10**12}},
    ]
    failed = await rest(party.priya, "post", url(party, "records/batch/"), {"ops": ops})
    assert (failed.status_code, failed.json()["error"]["op"]) == (422, 1)
    assert await planner.nothing_more() and await couple.nothing_more()
    ops[1]["changes"] = {"status": "done"}
    done = await rest(party.priya, "post", url(party, "records/batch/"), {"ops": ops})
    assert done.status_code == 200
    seqs = [reply["seq"] for reply in done.json()["results"]]
    for client in (planner, couple):
        received = [await until(client, "record.updated") for _ in ops]
        assert [(event["data"]["id"], event["seq"]) for event in received] == list(
            zip((item_id, task_id), seqs, strict=True)
        )


async def test_reloading_the_state_then_resuming_since_its_seq_misses_and_repeats_nothing(
    party: WeddingParty, sockets
) -> None:
    item_id = await make_record(party, "timeline_item", None)
    await rest(party.priya, "patch", record_url(party, "timeline_item", item_id), {"title": "Before"}, if_match=1)
    state = (await rest(party.ana, "get", url(party, "state/"))).json()
    [item] = state["records"]["timeline_item"]
    assert (item["version"], item["values"]["title"]) == (2, "Before")
    after = await rest(
        party.priya, "patch", record_url(party, "timeline_item", item_id), {"title": "After"}, if_match=2
    )
    couple = await sockets(party.ana)
    resumed = await couple.subscribe(party.wedding.pk, since=state["seq"], epoch=state["epoch"])
    assert resumed["data"]["recovered"] is True
    replayed = await couple.receive()
    assert (replayed["type"], replayed["seq"], replayed["replay"]) == ("record.updated", after.json()["seq"], True)
    assert (replayed["data"]["version"], replayed["data"]["values"]["title"]) == (3, "After")
    # The first event after the snapshot the couple may see: no gap. The seq between, if any, is the
    # change's other part (without ceremony details), stored before the author's.
    between = await database_sync_to_async(list)(
        Event.objects.filter(wedding_id=party.wedding.pk, seq__gt=state["seq"], seq__lt=replayed["seq"])
    )
    assert len(between) <= 1 and all("couple" not in event.audience_roles for event in between)
    assert await couple.nothing_more()  # nothing the snapshot already held comes again
