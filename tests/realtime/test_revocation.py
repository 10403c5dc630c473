"""Live sockets end when their user's access does (issue 16, item 3): a deactivated user, a changed
password, a browser session that ended; and the generation a socket keeps is its credential's."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from rest_framework.test import APIClient

from realtime import auth as socket_auth
from realtime.auth import SocketIdentity, socket_token_refresh
from realtime.services import tickets
from tests.personas import WeddingParty
from tests.realtime.conftest import Client, communicator
from wedsync.access_revocation import SESSION_GENERATION_KEY
from wedsync.selectors import token_generation_current
from wedsync.services.audit import ClientInfo
from wedsync.services.auth import access_token_grant, access_token_issue, tokens_revoke_for_user

pytestmark = [pytest.mark.django_db(transaction=True)]

CLIENT = ClientInfo(ip="198.51.100.7", user_agent="tests")


async def closed_with(comm: Any, *, within: float = 10) -> tuple[dict[str, Any], int]:
    """The error frame a closing socket sent and its close code (other frames are skipped)."""
    error: dict[str, Any] = {}
    async with asyncio.timeout(within):
        while True:
            output = await comm.receive_output(timeout=within)
            if output["type"] == "websocket.close":
                return error, output["code"]
            if '"op":"error"' in output.get("text", ""):
                import json

                error = json.loads(output["text"])


def _deactivate(user: User, *, with_signals: bool) -> None:
    if with_signals:
        user.is_active = False
        user.save()
    else:  # a bulk update: no signal, no revocation, only the flag
        User.objects.filter(pk=user.pk).update(is_active=False)


async def test_deactivating_a_user_closes_their_sockets_at_once(party: WeddingParty, sockets) -> None:
    client: Client = await sockets(party.paula)
    await client.subscribe(party.wedding.pk)
    await database_sync_to_async(_deactivate)(party.paula.user, with_signals=True)
    error, code = await closed_with(client.communicator, within=3)  # the revocation's own message
    assert (error.get("code"), code) == ("unauthorized", 4401)


async def test_a_flag_flipped_without_signals_still_ends_the_socket(party: WeddingParty, sockets) -> None:
    client: Client = await sockets(party.paula)
    await client.subscribe(party.wedding.pk)
    await database_sync_to_async(_deactivate)(party.paula.user, with_signals=False)
    # The publish path reads the user's flag itself, before any access check came round.
    reply = await client.request(
        "publish", topic=f"wedding:{party.wedding.pk}", type="chat.message", data={"text": "still here?"}
    )
    assert reply["error"]["code"] == "forbidden"
    error, code = await closed_with(client.communicator, within=8)  # the node's 5 s access check
    assert (code, error["message"]) == (4401, "Your account was deactivated. Log in again.")


async def test_a_password_change_closes_the_users_sockets(party: WeddingParty, sockets) -> None:
    client: Client = await sockets(party.ana)

    def change() -> None:
        user = party.ana.user
        user.set_password("a new long passphrase 77")
        user.save()

    await database_sync_to_async(change)()
    _error, code = await closed_with(client.communicator, within=3)
    assert code == 4401


def _session(user: User, *, generation: int | None = None) -> str:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if generation is not None:
        store[SESSION_GENERATION_KEY] = generation
    store.save()
    assert store.session_key is not None
    return store.session_key


def _session_socket(session_key: str) -> Any:
    return communicator(headers=[(b"cookie", f"sessionid={session_key}".encode()), (b"origin", b"https://127.0.0.1")])


async def test_a_session_socket_ends_with_its_session(party: WeddingParty, settings) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://127.0.0.1"]
    key = await database_sync_to_async(_session)(party.ana.user, generation=0)
    comm = _session_socket(key)
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=3))["op"] == "welcome"
    await database_sync_to_async(Session.objects.filter(session_key=key).delete)()  # logged out elsewhere
    error, code = await closed_with(comm, within=8)
    assert (code, error["message"]) == (4401, "Your session ended. Log in again.")


async def test_a_session_opened_before_a_revocation_cannot_open_a_socket(party: WeddingParty, settings) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://127.0.0.1"]
    key = await database_sync_to_async(_session)(party.ana.user, generation=0)
    await database_sync_to_async(tokens_revoke_for_user)(user_id=party.ana.user_id, reason="logout")
    comm = _session_socket(key)
    assert (await comm.connect())[0]
    error = await comm.receive_json_from(timeout=3)
    assert (error["op"], error["code"]) == ("error", "unauthorized")
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}


def _ticket_from_session(user: User) -> tuple[str, str]:
    from django.test import Client as BrowserClient

    from tests.factories import PASSWORD

    browser = BrowserClient()
    assert browser.login(username=user.username, password=PASSWORD)
    response = browser.post("/api/v1/realtime/tickets/")
    assert response.status_code == 201, response.content
    return response.json()["ticket"], browser.session.session_key or ""


async def test_a_ticket_a_session_asked_for_ends_with_that_session(party: WeddingParty) -> None:
    ticket, session_key = await database_sync_to_async(_ticket_from_session)(party.priya.user)
    comm = communicator(path=f"/ws/v1/?ticket={ticket}")
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=3))["op"] == "welcome"
    await database_sync_to_async(Session.objects.filter(session_key=session_key).delete)()
    _error, code = await closed_with(comm, within=8)
    assert code == 4401


def _ticket_from_token(user: User, lifetime: dt.timedelta) -> str:
    token = access_token_issue(user=user, lifetime=lifetime)
    response = APIClient().post("/api/v1/realtime/tickets/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 201, response.content
    return str(response.json()["ticket"])


async def test_a_ticket_a_token_asked_for_ends_with_that_token(party: WeddingParty) -> None:
    ticket = await database_sync_to_async(_ticket_from_token)(party.priya.user, dt.timedelta(seconds=2))
    comm = communicator(path=f"/ws/v1/?ticket={ticket}")
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=3))["op"] == "welcome"
    error, code = await closed_with(comm, within=6)
    assert (code, error["message"]) == (4401, "The token expired.")


def test_the_auth_op_keeps_the_generation_its_token_was_checked_against(party: WeddingParty, monkeypatch) -> None:
    user = party.priya.user
    token = access_token_issue(user=user)
    real_grant = access_token_grant

    def grant_then_revoked(*, raw: str) -> Any:  # a revocation lands right after the check
        grant = real_grant(raw=raw)
        tokens_revoke_for_user(user_id=user.pk, reason="logout")
        return grant

    monkeypatch.setattr(socket_auth, "access_token_grant", grant_then_revoked)
    identity = SocketIdentity(user_id=user.pk, user_name="", method="bearer", generation=0, expires_at=None)
    refreshed = socket_token_refresh(identity=identity, raw=token, client=CLIENT)
    assert refreshed.generation == 0 < token_generation_current(user_id=user.pk)  # so the revocation applies


def test_a_ticket_keeps_the_generation_it_was_issued_at(party: WeddingParty, monkeypatch) -> None:
    user = party.priya.user
    raw, _ttl = tickets.ticket_issue(user=user, client=CLIENT)
    real_consume = tickets.ticket_consume

    def consume_then_revoked(*, raw: str) -> Any:
        grant = real_consume(raw=raw)
        tokens_revoke_for_user(user_id=user.pk, reason="logout")
        return grant

    monkeypatch.setattr(socket_auth, "ticket_consume", consume_then_revoked)
    identity, _entry = socket_auth.socket_identify(
        headers={}, subprotocols=[], query_string=f"ticket={raw}", scheme="ws", client=CLIENT
    )
    assert identity.generation == 0 < token_generation_current(user_id=user.pk)


def test_a_ticket_is_refused_when_its_requests_credential_was_revoked_meanwhile(party: WeddingParty) -> None:
    user = party.priya.user
    # The request was authenticated with generation 0; a revocation lands before the ticket is made.
    tokens_revoke_for_user(user_id=user.pk, reason="logout")
    with pytest.raises(tickets.TicketRefused) as refused:
        tickets.ticket_issue(user=user, client=CLIENT, generation=0)
    assert refused.value.reason == "revoked"


def test_a_ticket_from_a_session_that_ended_opens_nothing(party: WeddingParty) -> None:
    key = _session(party.priya.user, generation=0)
    raw, _ttl = tickets.ticket_issue(user=party.priya.user, client=CLIENT, generation=0, session_key=key)
    Session.objects.filter(session_key=key).delete()  # logged out before the socket used it
    with pytest.raises(tickets.TicketRefused) as refused:
        tickets.ticket_consume(raw=raw)
    assert refused.value.reason == "session_ended"


async def test_a_session_cookie_with_a_nul_is_no_session_not_a_crash(party: WeddingParty, settings) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://127.0.0.1"]
    comm = communicator(headers=[(b"cookie", b'sessionid="abcdefgh\\000ijk"'), (b"origin", b"https://127.0.0.1")])
    assert (await comm.connect())[0]
    error = await comm.receive_json_from(timeout=3)
    assert (error["op"], error["code"]) == ("error", "unauthorized")
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}
