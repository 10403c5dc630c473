"""PROTOCOL.md sections 3-5 over the real ASGI application, one node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async

from realtime.models import WeddingStream
from realtime.services.events import member_event_publish
from tests.personas import WeddingParty, make_wedding_party
from tests.realtime.conftest import Client
from wedsync.models import AuditLog
from wedsync.permissions import Role
from wedsync.services.members import member_save

pytestmark = [pytest.mark.django_db(transaction=True)]

publish_as = database_sync_to_async(member_event_publish)


async def test_subscribe_reply_carries_seq_epoch_and_recovered(party: WeddingParty, sockets) -> None:
    client: Client = await sockets(party.priya)
    reply = await client.subscribe(party.wedding.pk, since=None)
    assert reply["status"] == "ok"
    stream = await database_sync_to_async(WeddingStream.objects.get)(wedding=party.wedding)
    presence = reply["data"].pop("presence")
    assert reply["data"] == {"seq": 0, "epoch": stream.epoch, "recovered": True}
    # The snapshot counts the subscriber itself (tests/presence has the rest of presence).
    assert presence["online"] == {"planner": 1}
    assert list(presence["members"]) == [str(party.priya.pk)]


async def test_a_chat_message_reaches_every_subscriber_once(party: WeddingParty, sockets) -> None:
    planner, guest, vendor = await sockets(party.priya), await sockets(party.gil), await sockets(party.paula)
    for client in (planner, guest, vendor):
        await client.subscribe(party.wedding.pk)
    reply = await guest.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "Where is parking?"}
    )
    assert reply["status"] == "ok" and reply["data"]["seq"] == 1
    for client in (planner, guest, vendor):
        event = await client.receive()
        assert event["op"] == "event" and event["seq"] == 1 and event["replay"] is False
        assert event["type"] == "chat.message" and event["data"] == {"text": "Where is parking?"}
        assert event["from"] == {"member": party.gil.pk, "role": "guest", "name": party.gil.name}
        assert event["priority"] == "normal" and event["topic"] == f"wedding:{party.wedding.pk}"
        assert await client.nothing_more()


async def test_audiences_decide_who_receives(party: WeddingParty, sockets) -> None:
    planner, couple = await sockets(party.priya), await sockets(party.ana)
    guest, caterer = await sockets(party.gil), await sockets(party.carmen)
    for client in (planner, couple, guest, caterer):
        await client.subscribe(party.wedding.pk)
    reply = await caterer.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="vendor.status", data={"activity": "setup"}
    )
    assert reply["status"] == "ok"
    for client in (planner, couple, caterer):  # couple + planner, and the sender's own devices
        assert (await client.receive())["type"] == "vendor.status"
    assert await guest.nothing_more()


async def test_to_narrows_delivery(party: WeddingParty, sockets) -> None:
    planner, couple, guest = await sockets(party.priya), await sockets(party.ana), await sockets(party.gil)
    for client in (planner, couple, guest):
        await client.subscribe(party.wedding.pk)
    await couple.request(
        "publish",
        topic=f"wedding:{party.wedding.pk}",
        type="chat.message",
        data={"text": "for the planner only"},
        to=["role:planner"],
    )
    assert (await planner.receive())["data"]["text"] == "for the planner only"
    assert (await couple.receive())["seq"] == 1  # the sender's own copy
    assert await guest.nothing_more()


async def test_replay_sends_exactly_what_was_missed_in_order_then_live(party: WeddingParty, sockets) -> None:
    for i in range(5):
        await publish_as(member=party.priya, type_name="chat.message", data={"text": f"m{i + 1}"})
    await publish_as(member=party.paula, type_name="vendor.status", data={"activity": "en_route"})  # not for guests
    guest = await sockets(party.gil)
    reply = await guest.subscribe(party.wedding.pk, since=2)
    assert reply["data"]["seq"] == 6 and reply["data"]["recovered"] is True
    replayed = [await guest.receive() for _ in range(3)]
    assert [(e["seq"], e["data"]["text"], e["replay"]) for e in replayed] == [
        (3, "m3", True),
        (4, "m4", True),
        (5, "m5", True),
    ]
    assert await guest.nothing_more()
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "live"})
    live = await guest.receive()
    assert (live["seq"], live["replay"]) == (7, False)


async def test_other_epoch_is_not_recovered(party: WeddingParty, sockets) -> None:
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "x"})
    client = await sockets(party.priya)
    reply = await client.subscribe(party.wedding.pk, since=0, epoch="an-old-epoch")
    assert reply["data"]["recovered"] is False
    assert await client.nothing_more()


async def test_min_priority_filters_live_and_replay(party: WeddingParty, sockets) -> None:
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "normal"})
    await publish_as(member=party.victor, type_name="emergency.alert", data={"message": "smoke in the kitchen"})
    phone = await sockets(party.paula)
    await phone.subscribe(party.wedding.pk, since=0, min_priority="high")
    assert (await phone.receive())["type"] == "emergency.alert"
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "normal again"})
    assert await phone.nothing_more()


async def test_subscribing_to_someone_elses_wedding_is_forbidden_and_audited(party: WeddingParty, sockets) -> None:
    other = await database_sync_to_async(make_wedding_party)()
    client = await sockets(party.gil)
    reply = await client.subscribe(other.wedding.pk)
    assert reply["error"]["code"] == "forbidden"
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.subscribe.refuse")
    assert entry.wedding_id == other.wedding.pk
    missing = await client.subscribe(999_999_999)
    # A wedding that does not exist is refused exactly like one the guest is not in: nobody can
    # probe which wedding ids exist.
    assert missing["error"] == {"code": "forbidden", "message": "You are not a member of wedding 999999999."}
    assert reply["error"]["message"] == f"You are not a member of wedding {other.wedding.pk}."
    audited = await database_sync_to_async(list)(
        AuditLog.objects.filter(action="realtime.subscribe.refuse").values_list("wedding_id", flat=True)
    )
    assert sorted(audited) == sorted([other.wedding.pk, 999_999_999])


async def test_publish_before_subscribe_is_not_subscribed(party: WeddingParty, sockets) -> None:
    client = await sockets(party.priya)
    reply = await client.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "x"}
    )
    assert reply["error"]["code"] == "not_subscribed"


async def test_forbidden_publish_is_refused_with_the_reason(party: WeddingParty, sockets) -> None:
    guest = await sockets(party.gil)
    await guest.subscribe(party.wedding.pk)
    reply = await guest.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="emergency.alert", data={"message": "x"}
    )
    assert reply["error"]["code"] == "forbidden" and "guest" in reply["error"]["message"]


async def test_idempotent_publish_over_the_socket(party: WeddingParty, sockets) -> None:
    client = await sockets(party.priya)
    await client.subscribe(party.wedding.pk)
    fields = {
        "topic": f"wedding:{party.wedding.pk}",
        "type": "chat.message",
        "data": {"text": "once"},
        "idempotency_key": "k1",
    }
    first = await client.request("publish", **fields)
    assert (await client.receive())["seq"] == 1
    again = await client.request("publish", **fields)
    assert again["data"] == first["data"]
    assert await client.nothing_more()


@pytest.mark.parametrize(
    ("raw", "code", "ref"),
    [
        ("{not json", "bad_json", None),
        ('{"op": "teleport", "ref": "t1"}', "unknown_op", "t1"),
        ('{"op": "subscribe", "ref": "s1", "topic": 42}', "invalid", "s1"),
        ('{"op": "subscribe", "ref": "s2", "topic": "wedding:1", "colour": "blue"}', "invalid", "s2"),
        ('{"op": "publish", "ref": "p1", "topic": "wedding:1", "type": "chat.message"}', "invalid", "p1"),
        ("[1, 2]", "invalid", None),
        ("[" * 3000, "bad_json", None),
        ("[" * 3000 + "]" * 3000, "bad_json", None),
        ('{"op": "heartbeat", "ref": "h1", "x": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}", "bad_json", None),
        ('{"op": "heartbeat", "ref": "h\\u0000"}', "invalid", "h\x00"),
        ('{"op": "subscribe", "ref": "s3", "topic": "wedding:1\\n"}', "invalid", "s3"),
    ],
)
async def test_bad_frames_get_an_error_reply_and_the_socket_stays(
    party: WeddingParty, sockets, raw: str, code: str, ref: str | None
) -> None:
    client = await sockets(party.priya)
    await client.communicator.send_to(text_data=raw)
    reply = await client.receive()
    assert reply["op"] == "reply" and reply["status"] == "error" and reply["ref"] == ref
    assert reply["error"]["code"] == code and reply["error"]["message"]
    assert (await client.request("heartbeat"))["status"] == "ok"


async def test_invalid_field_is_named(party: WeddingParty, sockets) -> None:
    client = await sockets(party.priya)
    await client.communicator.send_to(text_data='{"op": "subscribe", "ref": "s", "topic": "wedding:1", "since": "x"}')
    assert "$.since" in (await client.receive())["error"]["message"]


async def test_binary_frame_closes_with_1003(party: WeddingParty, sockets) -> None:
    client = await sockets(party.priya)
    await client.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await client.receive())["op"] == "error"
    assert await client.communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": 1003}


async def test_too_large_frame_closes_with_1009(party: WeddingParty, sockets) -> None:
    client = await sockets(party.priya)
    await client.communicator.send_to(text_data='{"op":"heartbeat","ref":"' + "x" * 70_000 + '"}')
    error = await client.receive()
    assert (error["op"], error["code"]) == ("error", "too_large")
    assert await client.communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": 1009}


async def test_repeated_violations_close_with_4400(party: WeddingParty, sockets) -> None:
    client = await sockets(party.priya)
    for _ in range(11):
        await client.communicator.send_to(text_data="nope")
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] != "websocket.close":
        frames.append(await client.communicator.receive_output(timeout=3))
    assert frames[-1] == {"type": "websocket.close", "code": 4400}
    assert '"code":"invalid"' in frames[-2]["text"] and '"op":"error"' in frames[-2]["text"]
    assert sum('"code":"bad_json"' in frame.get("text", "") for frame in frames) == 11


async def test_unexpired_token_refresh_in_band(party: WeddingParty, sockets) -> None:
    import datetime as dt

    from tests.realtime.conftest import bearer

    client = await sockets(party.priya, lifetime=dt.timedelta(seconds=2))
    reply = await client.request("auth", token=await bearer(party.priya))
    assert reply["status"] == "ok"
    await asyncio.sleep(2.5)
    assert (await client.request("heartbeat"))["status"] == "ok"  # still open past the first token


async def test_a_token_expiring_unrefreshed_closes_with_4401(party: WeddingParty, sockets) -> None:
    import datetime as dt

    client = await sockets(party.priya, lifetime=dt.timedelta(seconds=1))
    error = await client.receive(within=4)
    assert (error["op"], error["code"]) == ("error", "unauthorized")
    assert await client.communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}


async def test_auth_op_with_another_users_token_is_refused_and_audited(party: WeddingParty, sockets) -> None:
    from tests.realtime.conftest import bearer

    client = await sockets(party.priya)
    reply = await client.request("auth", token=await bearer(party.ana))
    assert reply["error"]["code"] == "unauthorized"
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.connect.refuse")
    assert (entry.actor_id, entry.outcome) == (party.ana.user_id, "refused")
    assert entry.details == {"method": "auth_op", "reason": "other_user", "socket_user": party.priya.user_id}
    assert (await client.request("heartbeat"))["status"] == "ok"


async def test_a_role_change_reaches_the_live_socket(party: WeddingParty, sockets) -> None:
    client = await sockets(party.paula)
    await client.subscribe(party.wedding.pk)

    def demote() -> None:
        party.paula.role = Role.GUEST.value
        party.paula.vendor_company = ""
        member_save(member=party.paula, actor=party.priya.user)

    await database_sync_to_async(demote)()
    frames = [await client.communicator.receive_output(timeout=5) for _ in range(3)]
    texts = [frame.get("text", "") for frame in frames]
    assert any('"op":"unsubscribed"' in text and "role_changed" in text for text in texts), frames
    assert frames[-1] == {"type": "websocket.close", "code": 4401}  # the token was revoked with the role


async def test_since_beyond_the_stream_is_not_recovered_and_live_continues_from_its_seq(
    party: WeddingParty, sockets
) -> None:
    for i in range(3):
        await publish_as(member=party.priya, type_name="chat.message", data={"text": f"m{i}"})
    guest = await sockets(party.gil)
    reply = await guest.subscribe(party.wedding.pk, since=10)  # e.g. after the history was restored
    assert (reply["data"]["recovered"], reply["data"]["seq"]) == (False, 3)
    for i in range(8):
        await publish_as(member=party.priya, type_name="chat.message", data={"text": f"n{i}"})
    assert [(await guest.receive())["seq"] for _ in range(8)] == list(range(4, 12))


async def test_a_removal_reaches_the_socket_even_if_the_control_message_is_lost(
    party: WeddingParty, sockets, monkeypatch
) -> None:
    from realtime import receivers
    from wedsync.services.members import member_remove

    monkeypatch.setattr(receivers, "node_control_send", lambda message: lambda: None)  # the layer lost it
    client = await sockets(party.paula)
    await client.subscribe(party.wedding.pk)
    await database_sync_to_async(member_remove)(member=party.paula, actor=party.priya.user)
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(10):  # the hub reconciles access every 5 s
        while not frames or frames[-1]["type"] != "websocket.close":
            frames.append(await client.communicator.receive_output(timeout=10))
    texts = [frame.get("text", "") for frame in frames]
    assert any('"op":"unsubscribed"' in text and '"removed"' in text for text in texts), frames
    assert frames[-1] == {"type": "websocket.close", "code": 4401}


async def test_frames_nested_a_little_are_still_fine(party: WeddingParty, sockets) -> None:
    client = await sockets(party.priya)
    await client.subscribe(party.wedding.pk)
    # Within the nesting limit but over the bracket count that makes the server walk the frame.
    text = "[" * 20 + "]" * 20 + " {a} [b] {c}" * 10
    topic = f"wedding:{party.wedding.pk}"
    reply = await client.request("publish", topic=topic, type="chat.message", data={"text": text})
    assert reply["status"] == "ok"
    assert (await client.receive())["data"]["text"] == text


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"type": "chat.message", "data": {"text": "a\x00b"}}, "$.data.text"),
        ({"type": "chat.message", "data": {"text": "ok"}, "idempotency_key": "k\x00"}, "$.idempotency_key"),
        ({"type": "chat.message", "data": {"text": "ok", "x\x00": 1}}, "$.data"),
        ({"type": "chat.message", "data": {"text": "ok"}, "to": ["role:\x00planner"]}, "$.to[0]"),
    ],
)
async def test_nul_characters_are_invalid_and_the_socket_stays(
    party: WeddingParty, sockets, fields: dict[str, Any], path: str
) -> None:
    client = await sockets(party.priya)
    await client.subscribe(party.wedding.pk)
    reply = await client.request("publish", topic=f"wedding:{party.wedding.pk}", **fields)
    assert reply["status"] == "error" and reply["error"]["code"] == "invalid", reply
    assert reply["error"]["message"].startswith(f"{path}:"), reply
    assert (await client.request("heartbeat"))["status"] == "ok"
    stored = WeddingStream.objects.filter(wedding=party.wedding, last_seq__gt=0)
    assert await database_sync_to_async(stored.count)() == 0


@pytest.mark.parametrize("target", ["member:\u00b2", "member:\u0661", "member:1\n", "member:", "member:-1"])
async def test_member_targets_that_are_not_ascii_ids_are_invalid(party: WeddingParty, sockets, target: str) -> None:
    client = await sockets(party.priya)
    await client.subscribe(party.wedding.pk)
    reply = await client.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "hi"}, to=[target]
    )
    assert reply["status"] == "error" and reply["error"]["code"] == "invalid", reply
    assert "to:" in reply["error"]["message"]
    assert (await client.request("heartbeat"))["status"] == "ok"


async def test_a_nul_in_a_header_does_not_stop_the_connect_or_its_audit(party: WeddingParty) -> None:
    from tests.realtime.conftest import bearer, communicator

    comm = communicator(
        subprotocols=["wedsync.v1", f"bearer.{await bearer(party.priya)}"], headers=[(b"user-agent", b"phone\x00/1")]
    )
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=3))["op"] == "welcome"
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.connect")
    assert entry.user_agent == "phone/1"
    await comm.disconnect()


async def test_a_long_replay_arrives_whole_a_page_at_a_time(party: WeddingParty, sockets, monkeypatch) -> None:
    from realtime import selectors

    monkeypatch.setattr(selectors, "_REPLAY_CHUNK", 4)
    for i in range(11):
        await publish_as(member=party.priya, type_name="chat.message", data={"text": f"m{i}"})
    guest = await sockets(party.gil)
    reply = await guest.subscribe(party.wedding.pk, since=0)
    assert (reply["data"]["seq"], reply["data"]["recovered"]) == (11, True)
    await publish_as(member=party.priya, type_name="chat.message", data={"text": "live"})
    frames = [await guest.receive() for _ in range(12)]
    assert [frame["seq"] for frame in frames] == list(range(1, 13))
    assert [frame["replay"] for frame in frames] == [True] * 11 + [False]
    assert await guest.nothing_more()
