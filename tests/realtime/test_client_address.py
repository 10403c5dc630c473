"""A socket's audited address comes through the trusted proxy chain, like an HTTP request's."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from tests.personas import WeddingParty
from tests.realtime.conftest import Client, bearer, communicator
from wedsync.models import AuditLog

pytestmark = [pytest.mark.django_db(transaction=True)]


async def _connect_audited_address(party: WeddingParty, *, forwarded_for: list[bytes]) -> str | None:
    comm = communicator(
        subprotocols=["wedsync.v1", f"bearer.{await bearer(party.priya)}"],
        headers=[(b"x-forwarded-for", value) for value in forwarded_for],
    )
    comm.scope["client"] = ["10.0.0.1", 40000]  # the proxy daphne heard from
    connected, _ = await comm.connect()
    assert connected
    client = Client(comm)
    assert (await client.receive())["op"] == "welcome"
    await client.close()
    entry = await database_sync_to_async(AuditLog.objects.get)(action="realtime.connect")
    return entry.ip


async def test_a_spoofed_forwarded_for_is_ignored_when_no_proxy_is_trusted(party: WeddingParty) -> None:
    assert await _connect_audited_address(party, forwarded_for=[b"203.0.113.9"]) == "10.0.0.1"


@override_settings(TRUSTED_PROXIES=2)
async def test_behind_trusted_proxies_the_socket_audits_the_client(party: WeddingParty) -> None:
    # Two header lines count as one comma-joined list, as in HTTP.
    address = await _connect_audited_address(party, forwarded_for=[b"198.51.100.66, 203.0.113.9", b"10.0.0.7"])
    assert address == "203.0.113.9"
