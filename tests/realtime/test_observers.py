"""Staff observer sockets (``/ws/v1/?observe=1``, decision 0029): a coordinator watches the weddings
they oversee as a planner sees them, writes nothing, is nobody's presence, and loses a wedding the
moment their oversight of it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from presence.selectors import presence_members
from realtime.node import housekeeping
from realtime.node import hub as hub_module
from realtime.services.events import member_event_publish
from tests.factories import UserFactory, WeddingFactory
from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer, communicator
from wedsync.models import AuditLog, CoordinatorAssignment

pytestmark = [pytest.mark.django_db(transaction=True)]

publish_as = database_sync_to_async(member_event_publish)


@pytest.fixture
def cora(party: WeddingParty) -> User:
    """A coordinator assigned to the party's wedding (staff scope, not a member)."""
    user: User = UserFactory(username="cora", is_staff=True)
    CoordinatorAssignment.objects.create(wedding=party.wedding, coordinator=user)
    return user


OBSERVE = "/ws/v1/?observe=1"


async def test_a_member_who_is_not_staff_may_not_observe(party: WeddingParty) -> None:
    comm = communicator(path=OBSERVE, subprotocols=["wedsync.v1", f"bearer.{await bearer(party.priya)}"])
    connected, _ = await comm.connect()
    assert connected  # accepted to be told why, then closed
    error = await comm.receive_json_from(timeout=3)
    assert error["code"] == "forbidden" and "staff" in error["message"]
    assert (await comm.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4403}
    entry = await AuditLog.objects.aget(action="realtime.connect.refuse")
    assert (entry.actor_id, entry.outcome, entry.details["reason"]) == (party.priya.user_id, "refused", "not_staff")


async def test_an_observer_sees_what_a_planner_sees_minus_what_is_addressed_to_members(
    party: WeddingParty, cora: User, sockets
) -> None:
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "before"})
    await publish_as(
        member=party.priya, type_name="chat.message", data={"text": "to carmen"}, to=[f"member:{party.carmen.pk}"]
    )
    observer = await sockets(cora, path=OBSERVE)
    assert observer.welcome is not None
    assert observer.welcome["memberships"] == [] and observer.welcome["heartbeat_interval"] == 10
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk, since=0)
    planner_seen = [(await planner.receive())["data"]["text"] for _ in range(2)]
    reply = await observer.subscribe(party.wedding.pk, since=0)
    assert reply["status"] == "ok", reply
    assert (await observer.receive())["data"]["text"] == "before"  # the replay
    await publish_as(member=party.paula, type_name="vendor.status", data={"activity": "en_route"})
    live = await observer.receive()
    assert (live["type"], live["seq"]) == ("vendor.status", 3)
    assert await observer.nothing_more()
    assert planner_seen == ["before", "to carmen"]  # the planner's own, which the observer lacks


async def test_an_observer_is_shown_presence_and_is_nobodys_presence(party: WeddingParty, cora: User, sockets) -> None:
    victor = await sockets(party.victor)
    await victor.subscribe(party.wedding.pk)
    observer = await sockets(cora, path=OBSERVE)
    reply = await observer.subscribe(party.wedding.pk)
    assert str(party.victor.pk) in reply["data"]["presence"]["members"]
    present = await database_sync_to_async(presence_members)(wedding_id=party.wedding.pk)
    assert set(present) == {party.victor.pk}  # the observer's socket joined nobody's presence
    assert (await victor.request("presence", topic=f"wedding:{party.wedding.pk}", state={"location": "parking"}))[
        "status"
    ] == "ok"
    shown: dict[str, Any] = {}
    while shown.get("location") != "parking":  # a planner's view: locations shown
        diff = await observer.presence_diff()
        shown = {
            **shown,
            **diff["joins"].get(str(party.victor.pk), {}),
            **diff["updates"].get(str(party.victor.pk), {}),
        }


async def test_weddings_outside_the_coordinators_scope_are_refused_alike_and_audited(
    party: WeddingParty, cora: User, sockets
) -> None:
    other = await database_sync_to_async(WeddingFactory)()
    observer = await sockets(cora, path=OBSERVE)
    for wedding_id in (other.pk, 987654321):
        reply = await observer.subscribe(wedding_id)
        assert reply["error"]["code"] == "forbidden"
        assert reply["error"]["message"] == f"You do not oversee wedding {wedding_id}."
    refusals = [
        entry.details async for entry in AuditLog.objects.filter(action="realtime.subscribe.refuse").order_by("pk")
    ]
    assert refusals == [{"user": cora.pk, "reason": "not overseen"}] * 2
    assert (await observer.request("heartbeat"))["status"] == "ok"  # the socket stays


async def test_an_observer_writes_nothing_and_each_attempt_is_audited(party: WeddingParty, cora: User, sockets) -> None:
    observer = await sockets(cora, path=OBSERVE)
    topic = f"wedding:{party.wedding.pk}"
    await observer.subscribe(party.wedding.pk)
    attempts: list[dict[str, Any]] = [
        {"op": "publish", "topic": topic, "type": "chat.message", "data": {"text": "hi"}},
        {"op": "presence", "topic": topic, "state": {"status": "online"}},
        {"op": "ack", "topic": topic, "seq": 1},
        {"op": "sync", "topic": topic, "record": "task", "id": None, "base_version": None, "changes": {"title": "x"}},
    ]
    for frame in attempts:
        op = frame.pop("op")
        reply = await observer.request(op, **frame)
        assert reply["error"]["code"] == "forbidden", (op, reply)
    entries = [entry async for entry in AuditLog.objects.filter(action="realtime.observer.refuse").order_by("pk")]
    assert [entry.details["op"] for entry in entries] == ["publish", "presence", "ack", "sync"]
    assert {(entry.actor_id, entry.target) for entry in entries} == {(None, topic)}
    assert await database_sync_to_async(lambda: party.wedding.events.count())() == 0


async def test_an_observer_loses_a_wedding_when_oversight_ends(party: WeddingParty, cora: User, sockets) -> None:
    observer = await sockets(cora, path=OBSERVE)
    await observer.subscribe(party.wedding.pk)
    hub = hub_module._hubs[asyncio.get_running_loop()]
    await housekeeping.access_reconcile(hub)  # still overseen: nothing happens
    assert await observer.nothing_more()
    await CoordinatorAssignment.objects.filter(coordinator=cora).adelete()
    await housekeeping.access_reconcile(hub)
    told = await observer.receive()
    assert told == {"op": "unsubscribed", "topic": f"wedding:{party.wedding.pk}", "reason": "oversight_ended"}
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "after"})
    assert await observer.nothing_more(0.5)


async def test_a_member_change_of_the_same_user_leaves_the_observers_subscription(
    party: WeddingParty, cora: User, sockets
) -> None:
    from realtime.messages import ControlMessage

    observer = await sockets(cora, path=OBSERVE)
    await observer.subscribe(party.wedding.pk)
    hub = hub_module._hubs[asyncio.get_running_loop()]
    socket = next(iter(hub.sockets.values()))
    socket.on_control(ControlMessage(kind="member_changed", user=cora.pk, wedding=party.wedding.pk, reason="removed"))
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "still here"})
    assert (await observer.receive())["data"]["text"] == "still here"


async def test_an_observer_follows_a_bounded_number_of_weddings(
    party: WeddingParty, cora: User, sockets, settings
) -> None:
    settings.REALTIME_OBSERVE_MAX_WEDDINGS = 1
    second = await database_sync_to_async(WeddingFactory)()
    await CoordinatorAssignment.objects.acreate(wedding=second, coordinator=cora)
    observer = await sockets(cora, path=OBSERVE)
    assert (await observer.subscribe(party.wedding.pk))["status"] == "ok"
    assert (await observer.subscribe(party.wedding.pk))["status"] == "ok"  # a resume of the one it holds
    reply = await observer.subscribe(second.pk)
    assert reply["error"]["code"] == "forbidden" and "at most 1" in reply["error"]["message"]


async def test_an_integrators_key_opens_an_observer_socket_on_its_weddings(party: WeddingParty) -> None:
    from rest_framework.test import APIClient

    from wedsync.models import ServiceAccountKey
    from wedsync.services.service_accounts import (
        service_account_create,
        service_account_key_issue,
        service_account_key_revoke,
    )

    def ticket_for_a_new_key() -> tuple[ServiceAccountKey, str]:
        account = service_account_create(name="Luz CRM", scopes=["read"], weddings=[party.wedding], actor=None)
        key, raw = service_account_key_issue(account=account, name="prod", actor=None)
        response = APIClient().post("/api/v1/realtime/tickets/", HTTP_AUTHORIZATION=f"Api-Key {raw}")
        assert response.status_code == 201, response.json()
        return key, response.json()["ticket"]

    key, ticket = await database_sync_to_async(ticket_for_a_new_key)()
    comm = communicator(path=f"{OBSERVE}&ticket={ticket}", subprotocols=["wedsync.v1"])
    connected, _ = await comm.connect()
    assert connected
    client = Client(comm)
    try:
        assert (await client.receive())["op"] == "welcome"
        assert (await client.subscribe(party.wedding.pk))["status"] == "ok"
        await publish_as(member=party.priya, type_name="chat.message", data={"text": "hello, CRM"})
        assert (await client.receive())["data"]["text"] == "hello, CRM"
        await database_sync_to_async(service_account_key_revoke)(key=key, actor=None)
        error = await client.receive()
        assert error["code"] == "unauthorized"
        assert (await comm.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4401}
    finally:
        await client.close()
        hub = hub_module._hubs.get(asyncio.get_running_loop())
        if hub is not None:
            await hub.stop()
