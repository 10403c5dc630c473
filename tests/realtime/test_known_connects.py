"""A bearer token's reconnect answered from what its last connect read (decision 0046)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async

from realtime import consumers, receivers
from realtime.auth import SocketIdentity
from realtime.node import housekeeping
from realtime.node import hub as hub_module
from realtime.node.known_connects import KnownConnects
from realtime.selectors import MembershipView
from realtime.services.sockets import SocketOpened
from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer, communicator
from tests.realtime.test_member_cache import until
from wedsync.models import AuditLog, AuditOutcome
from wedsync.services.audit import AuditAction, ClientInfo, audit_entry_build
from wedsync.services.auth import tokens_revoke_for_user

CLIENT = ClientInfo(ip="198.51.100.7", user_agent="tests")
HEADERS = {"host": "127.0.0.1:8000"}


def opened_for(*, expires_at: float | None = None, observer: bool = False) -> SocketOpened:
    identity = SocketIdentity(
        user_id=7, user_name="Paula", method="bearer", generation=0, expires_at=expires_at, observer=observer
    )
    entry = audit_entry_build(action=AuditAction.SOCKET_CONNECT, outcome=AuditOutcome.SUCCESS, actor_label="paula")
    return SocketOpened(
        identity=identity, memberships=[MembershipView(1, 2, "photographer")], heartbeat=30, audit_entry=entry
    )


def test_a_kept_connect_is_answered_while_fresh_with_a_new_audit_entry() -> None:
    now = [100.0]
    known = KnownConnects(seconds=60, size=10, clock=lambda: now[0])
    kept = opened_for(expires_at=time.time() + 600)
    kept_token = "a-kept-token"
    known.keep(kept_token, opened=kept, generation=3, at=now[0])

    def opened(
        token: str | None = kept_token, generation: int = 3, headers: dict[str, str] = HEADERS, query: str = ""
    ) -> Any:
        return known.opened(
            token, generation=generation, headers=headers, scheme="ws", query_string=query, client=CLIENT
        )

    again = opened()
    assert again is not None and again.opened.identity is kept.identity and (again.generation, again.at) == (3, 100.0)
    assert again.opened.audit_entry is not kept.audit_entry
    assert (again.opened.audit_entry.actor_id, again.opened.audit_entry.ip) == (7, "198.51.100.7")
    assert opened(generation=4) is None  # a member change or revocation heard since
    assert opened(token="other") is None and opened(token=None) is None
    assert opened(query="observe=1") is None  # an observer's connect is read afresh
    assert opened(headers={**HEADERS, "origin": "https://elsewhere.example"}) is None  # the hop refuses it
    now[0] += 60
    assert opened() is None  # as old as the member cache keeps anything


def test_an_expired_token_or_an_observer_is_not_kept_or_answered() -> None:
    known = KnownConnects(seconds=60, size=10)
    known.keep("expired", opened=opened_for(expires_at=time.time() - 1), generation=0, at=time.monotonic())
    known.keep("observer", opened=opened_for(observer=True), generation=0, at=time.monotonic())
    for token in ("expired", "observer"):
        assert known.opened(token, generation=0, headers=HEADERS, scheme="ws", query_string="", client=CLIENT) is None


# --- over the real application ---------------------------------------------------------------------


@pytest.fixture
def connect_hops(monkeypatch) -> list[str]:
    """Each connect that read who it is in a thread hop."""
    hops: list[str] = []
    real = consumers._socket_open

    async def counted(**kwargs: Any) -> Any:
        hops.append(kwargs["query_string"])
        return await real(**kwargs)

    monkeypatch.setattr(consumers, "_socket_open", counted)
    return hops


async def connect_with(token: str) -> tuple[Any, dict[str, Any]]:
    comm = communicator(subprotocols=["wedsync.v1", f"bearer.{token}"])
    connected, _subprotocol = await comm.connect()
    assert connected
    return comm, await comm.receive_json_from(timeout=3)


@pytest.mark.django_db(transaction=True)
async def test_a_reconnect_with_the_same_token_needs_no_thread_hop(party: WeddingParty, sockets, connect_hops) -> None:
    await sockets(party.priya)  # the node's hub runs (and is stopped by the fixture)
    connect_hops.clear()
    token = await bearer(party.paula)
    first, welcome = await connect_with(token)
    await first.disconnect()
    second, again = await connect_with(token)
    assert len(connect_hops) == 1
    assert again["op"] == "welcome" and again["memberships"] == welcome["memberships"]
    assert again["user"] == welcome["user"] and again["session"] != welcome["session"]
    client = Client(second)
    assert (await client.subscribe(party.wedding.pk))["status"] == "ok"
    await second.disconnect()
    connects = AuditLog.objects.filter(action="realtime.connect", actor_id=party.paula.user_id)
    for _ in range(100):  # the node writes its audit entries in batches
        if await database_sync_to_async(connects.count)() >= 2:
            break
        await asyncio.sleep(0.05)
    assert await database_sync_to_async(connects.count)() == 2  # each connect audited, kept or not


@pytest.mark.django_db(transaction=True)
async def test_a_revoked_token_reconnects_only_through_the_database(party: WeddingParty, sockets, connect_hops) -> None:
    await sockets(party.priya)
    hub = hub_module._hubs[asyncio.get_running_loop()]
    token = await bearer(party.paula)
    first, _welcome = await connect_with(token)
    generation = hub.members.generation
    await database_sync_to_async(tokens_revoke_for_user)(user_id=party.paula.user_id, reason="tests")
    await until(lambda: hub.members.generation != generation)
    await first.disconnect()
    connect_hops.clear()
    refused, error = await connect_with(token)
    assert error["op"] == "error" and error["code"] == "unauthorized"
    assert connect_hops  # read afresh, and refused
    await refused.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_revocation_the_access_check_finds_is_not_answered_from_the_kept_connect(
    party: WeddingParty, sockets, connect_hops, monkeypatch
) -> None:
    """A revocation whose message was lost: the access check closes the socket, and the same
    token's reconnect is read afresh (and refused), not answered from what its connect read."""
    await sockets(party.priya)
    hub = hub_module._hubs[asyncio.get_running_loop()]
    token = await bearer(party.paula)
    monkeypatch.setattr(receivers, "node_control_send", lambda message: lambda: None)  # the message is lost
    first, _welcome = await connect_with(token)
    generation = hub.members.generation
    await database_sync_to_async(tokens_revoke_for_user)(user_id=party.paula.user_id, reason="tests")
    assert hub.members.generation == generation
    await housekeeping.access_reconcile(hub)
    await first.disconnect()
    connect_hops.clear()
    refused, error = await connect_with(token)
    assert error["op"] == "error" and error["code"] == "unauthorized"
    assert connect_hops
    await refused.disconnect()
