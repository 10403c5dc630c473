"""PROTOCOL.md section 2 over the real ASGI application: every way in, every refusal, the audit."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from channels.db import database_sync_to_async
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from realtime.services.tickets import ticket_issue
from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer, communicator
from wedsync.models import AuditLog
from wedsync.services.audit import ClientInfo

pytestmark = [pytest.mark.django_db(transaction=True)]


async def refused(comm, *, close_code: int, error: str) -> None:
    connected, _ = await comm.connect()
    assert connected  # accepted, so the browser can read the close code
    frame = await comm.receive_json_from(timeout=3)
    assert frame["op"] == "error" and frame["code"] == error, frame
    closed = await comm.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": close_code}


async def refusals(reason: str | None = None) -> list[AuditLog]:
    rows = await database_sync_to_async(list)(AuditLog.objects.filter(action="realtime.connect.refuse"))
    return [row for row in rows if reason is None or row.details.get("reason") == reason]


async def test_bearer_token_gets_a_welcome(party: WeddingParty, sockets) -> None:
    client: Client = await sockets(party.priya)
    welcome = client.welcome
    assert welcome is not None
    assert client.communicator.scope["subprotocols"] == []  # the token read once, not kept for the socket's life
    assert welcome["user"]["id"] == party.priya.user_id
    assert welcome["memberships"] == [{"wedding": party.wedding.pk, "member": party.priya.pk, "role": "planner"}]
    assert welcome["heartbeat_interval"] == 30
    assert welcome["max_frame"] == 65536
    assert welcome["session"] and welcome["node"] and welcome["server_time"].endswith("Z")
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.connect")
    assert (entry.actor_id, entry.outcome, entry.details["method"], entry.user_agent) == (
        party.priya.user_id,
        "success",
        "bearer",
        "tests/1.0",
    )


async def test_wedding_day_heartbeat_is_ten_seconds(sockets) -> None:
    from tests.personas import make_wedding_party

    with time_machine.travel(dt.datetime(2026, 6, 13, 9, 0, tzinfo=dt.UTC), tick=True):
        party = await database_sync_to_async(make_wedding_party)(
            date=dt.date(2026, 6, 13), time_zone="Pacific/Auckland"
        )
        # 09:00 UTC is 21:00 on 13 June in Auckland: the wedding is today there.
        client = await sockets(party.ana)
        assert client.welcome["heartbeat_interval"] == 10


@pytest.mark.parametrize("kind", ["garbage", "expired", "alg-none"])
async def test_bad_bearer_tokens_are_refused_with_4401(party: WeddingParty, kind: str) -> None:
    import base64
    import json

    if kind == "garbage":
        token = "not.a.jwt"
    elif kind == "expired":
        token = await bearer(party.priya, lifetime=dt.timedelta(seconds=-60))
    else:
        header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
        body = (await bearer(party.priya)).split(".")[1]
        token = f"{header}.{body}."
    await refused(communicator(subprotocols=["wedsync.v1", f"bearer.{token}"]), close_code=4401, error="unauthorized")
    (entry,) = await refusals()
    assert entry.details["method"] == "bearer" and entry.outcome == "refused"


async def test_bearer_without_the_protocol_name_is_refused(party: WeddingParty) -> None:
    await refused(
        communicator(subprotocols=[f"bearer.{await bearer(party.priya)}"]), close_code=4401, error="unauthorized"
    )
    assert len(await refusals("protocol_missing")) == 1


async def test_no_credentials_is_refused(party: WeddingParty) -> None:
    await refused(communicator(), close_code=4401, error="unauthorized")
    assert len(await refusals("no_credentials")) == 1


async def test_a_ticket_works_once(party: WeddingParty, sockets) -> None:
    raw, _ttl = await database_sync_to_async(ticket_issue)(
        user=party.ana.user, client=ClientInfo(ip=None, user_agent="")
    )
    first = communicator(path=f"/ws/v1/?ticket={raw}")
    connected, _ = await first.connect()
    assert connected
    assert (await first.receive_json_from())["op"] == "welcome"
    assert first.scope["query_string"] == b""  # read once, not kept for the socket's life
    await first.disconnect()
    await refused(communicator(path=f"/ws/v1/?ticket={raw}"), close_code=4401, error="unauthorized")
    assert len(await refusals("ticket_used")) == 1


def _session_cookie(user) -> bytes:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    return f"sessionid={store.session_key}".encode()


async def test_session_cookie_with_same_origin_is_accepted(party: WeddingParty, settings) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["http://localhost"]  # plain http trusted, as while developing
    cookie = await database_sync_to_async(_session_cookie)(party.ana.user)
    comm = communicator(headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1:8000")])
    connected, _ = await comm.connect()
    assert connected
    welcome = await comm.receive_json_from()
    assert welcome["op"] == "welcome" and welcome["user"]["id"] == party.ana.user_id
    await comm.disconnect()


@pytest.mark.parametrize(
    ("scheme", "forwarded", "proxies", "origin", "accepted"),
    [
        ("wss", None, 0, b"https://127.0.0.1:8000", True),
        ("ws", None, 0, b"http://127.0.0.1:8000", False),  # only https:// is trusted (the production default)
        ("wss", None, 0, b"http://127.0.0.1:8000", False),  # another scheme than the socket's
        ("ws", None, 0, b"https://127.0.0.1:8000", False),
        ("ws", b"https", 1, b"https://127.0.0.1:8000", True),  # TLS ended at a trusted proxy
        ("ws", b"https", 0, b"https://127.0.0.1:8000", False),  # the header of an untrusted client
    ],
)
async def test_same_origin_compares_the_scheme_too(
    party: WeddingParty, settings, scheme: str, forwarded: bytes | None, proxies: int, origin: bytes, accepted: bool
) -> None:
    settings.TRUSTED_PROXIES = proxies
    assert all(trusted.startswith("https://") for trusted in settings.CSRF_TRUSTED_ORIGINS)
    cookie = await database_sync_to_async(_session_cookie)(party.ana.user)
    headers = [(b"cookie", cookie), (b"origin", origin)]
    if forwarded is not None:
        headers.append((b"x-forwarded-proto", forwarded))
    comm = communicator(headers=headers)
    comm.scope["scheme"] = scheme
    if accepted:
        assert (await comm.connect())[0]
        assert (await comm.receive_json_from(timeout=3))["op"] == "welcome"
        await comm.disconnect()
    else:
        await refused(comm, close_code=4403, error="forbidden")
        assert len(await refusals("origin_refused")) == 1


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.example",
        b"null",
        b"http://127.0.0.1:8000.evil.example",
        b"http://evil-127.0.0.1:8000",
        b"http://127.0.0.1:9999",
        b"ftp://127.0.0.1:8000",
    ],
)
async def test_foreign_origins_are_refused_whatever_the_credentials(party: WeddingParty, origin: bytes) -> None:
    cookie = await database_sync_to_async(_session_cookie)(party.ana.user)
    comm = communicator(
        subprotocols=["wedsync.v1", f"bearer.{await bearer(party.ana)}"],
        headers=[(b"cookie", cookie), (b"origin", origin)],
    )
    await refused(comm, close_code=4403, error="forbidden")
    (entry,) = await refusals("origin_refused")
    assert entry.details["origin"] == origin.decode()


async def test_cookies_without_an_origin_are_refused(party: WeddingParty) -> None:
    cookie = await database_sync_to_async(_session_cookie)(party.ana.user)
    await refused(communicator(headers=[(b"cookie", cookie)]), close_code=4403, error="forbidden")
    assert len(await refusals("origin_missing")) == 1


async def test_trusted_origin_from_settings_is_accepted(party: WeddingParty, settings) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.wedsync.example"]
    cookie = await database_sync_to_async(_session_cookie)(party.ana.user)
    comm = communicator(headers=[(b"cookie", cookie), (b"origin", b"https://app.wedsync.example")])
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["op"] == "welcome"
    await comm.disconnect()
