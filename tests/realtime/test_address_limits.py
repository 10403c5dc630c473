"""Per source address (issue 16 item 5, decision 0025): a flood of bad handshakes writes a bounded
number of audit rows with the right count, and handshakes per window and open sockets are capped
on every node alike (close 1013 with ``rate_limited`` and ``retry_after``), letting in again after
the window or once a socket closes, and forgetting the sockets of a node that died."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from channels.db import database_sync_to_async
from django.test import override_settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from realtime.limits.addresses import ADDRESS_SOCKET_TTL_SECONDS
from realtime.limits.node import Limits
from tests.personas import WeddingParty
from tests.realtime.conftest import bearer, communicator
from tests.realtime.nodes import cluster
from wedsync.models import AuditLog
from wedsync.services.audit import audit_refusals_flush

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

T0 = dt.datetime(2026, 6, 13, 15, 0, tzinfo=dt.UTC)  # the start of a window (windows are aligned)
ATTACKER = "203.0.113.66"
VENUE = "198.51.100.20"

refusal_rows = database_sync_to_async(
    lambda: list(AuditLog.objects.filter(action="realtime.connect.refuse").order_by("id"))
)


async def handshake(address: str, *, token: str | None = None, port: int = 50000) -> tuple[Any, list[dict], int | None]:
    """Open a socket from ``address``; returns the communicator, the frames it was sent, and its
    close code if the server closed it (None while it stays open)."""
    protocols = ["wedsync.v1", f"bearer.{token}"] if token else ["wedsync.v1", "bearer.forged"]
    comm = communicator(subprotocols=protocols, client=(address, port))
    connected, _ = await comm.connect(timeout=5)
    assert connected  # accepted first, so that a browser can read why it is closed
    frames: list[dict] = []
    while True:
        message = await comm.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            await comm.disconnect()  # the client's side of the close: the server lets go of the socket
            return comm, frames, message.get("code")
        frames.append(json.loads(message["text"]))
        if frames[-1]["op"] == "welcome":
            return comm, frames, None


@pytest.fixture
async def clock() -> AsyncIterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=True) as traveller:
        yield traveller


async def test_a_flood_of_bad_handshakes_writes_a_bounded_number_of_rows_with_the_right_count(clock) -> None:
    async def one(n: int) -> int | None:
        _comm, frames, code = await handshake(ATTACKER, port=40000 + n)
        assert frames[0]["code"] == "unauthorized"
        return code

    codes: list[int | None] = []
    for start in range(0, 500, 50):
        codes += await asyncio.gather(*(one(n) for n in range(start, start + 50)))
    assert codes == [4401] * 500
    rows = await refusal_rows()
    assert [(e.ip, e.details["reason"], e.details["count"]) for e in rows] == [(ATTACKER, "invalid", 1)]
    clock.move_to(T0 + dt.timedelta(seconds=63))
    await database_sync_to_async(audit_refusals_flush)()
    rows = await refusal_rows()
    assert [(e.ip, e.details["count"], e.details.get("aggregated", False)) for e in rows] == [
        (ATTACKER, 1, False),
        (ATTACKER, 499, True),
    ]


@override_settings(REALTIME_ADDRESS_HANDSHAKES=3, REALTIME_ADDRESS_CONNECTIONS=0)
async def test_handshakes_past_the_cap_are_closed_1013_until_the_window_ends(party: WeddingParty, clock) -> None:
    token = await bearer(party.priya)
    opened = []
    for n in range(3):
        comm, frames, code = await handshake(VENUE, token=token, port=41000 + n)
        assert (frames[0]["op"], code) == ("welcome", None)
        opened.append(comm)
    _comm, frames, code = await handshake(VENUE, token=token, port=41003)
    assert code == 1013
    assert (frames[0]["op"], frames[0]["code"]) == ("error", "rate_limited")
    assert 0 < frames[0]["retry_after"] <= 60
    # Another address has budget of its own.
    comm, frames, code = await handshake(ATTACKER, token=token, port=41004)
    assert (frames[0]["op"], code) == ("welcome", None)
    opened.append(comm)
    rows = await refusal_rows()
    assert [(e.ip, e.details["reason"]) for e in rows] == [(VENUE, "address_handshakes")]
    clock.move_to(T0 + dt.timedelta(seconds=61))
    comm, frames, code = await handshake(VENUE, token=token, port=41005)
    assert (frames[0]["op"], code) == ("welcome", None)  # a new window: let in again
    opened.append(comm)
    for comm in opened:
        await comm.disconnect()


@override_settings(REALTIME_ADDRESS_HANDSHAKES=0, REALTIME_ADDRESS_CONNECTIONS=2)
async def test_open_sockets_past_the_cap_are_closed_1013_and_a_closed_one_frees_its_place(
    party: WeddingParty,
) -> None:
    token = await bearer(party.priya)
    first, _, _ = await handshake(VENUE, token=token, port=42000)
    second, _, _ = await handshake(VENUE, token=token, port=42001)
    for port in (42002, 42003):
        _comm, frames, code = await handshake(VENUE, token=token, port=port)
        assert (code, frames[0]["code"], frames[0]["retry_after"]) == (1013, "rate_limited", 10.0)
    await first.disconnect()
    # A socket refused for its credentials gives its place back when it closes.
    _comm, frames, code = await handshake(VENUE, port=42004)
    assert (code, frames[0]["code"]) == (4401, "unauthorized")
    third, frames, code = await handshake(VENUE, token=token, port=42005)
    assert (frames[0]["op"], code) == ("welcome", None)
    _comm, frames, code = await handshake(VENUE, token=token, port=42006)
    assert code == 1013  # two open again
    for comm in (second, third):
        await comm.disconnect()
    rows = await refusal_rows()
    assert [(e.details["reason"], e.details["count"]) for e in rows] == [
        ("address_connections", 1),  # the window's first; the other two are counted for its summary
        ("invalid", 1),
    ]


@override_settings(REALTIME_ADDRESS_HANDSHAKES=0, REALTIME_ADDRESS_CONNECTIONS=2)
async def test_a_dead_nodes_sockets_stop_counting_and_a_live_node_keeps_its_own() -> None:
    dead, alive, newcomer = Limits(), Limits(), Limits()  # three nodes' limits on one Redis
    try:
        with time_machine.travel(T0, tick=False) as traveller:
            assert (await dead.address_admit(address=VENUE)).allowed
            assert (await alive.address_admit(address=ATTACKER)).allowed
            assert (await alive.address_admit(address=ATTACKER)).allowed
            assert (await dead.address_admit(address=VENUE)).allowed
            refused = await newcomer.address_admit(address=VENUE)
            assert (refused.allowed, refused.limit) == (False, "connections")
            traveller.shift(dt.timedelta(seconds=ADDRESS_SOCKET_TTL_SECONDS - 10))
            await alive.device_refresh(connection_ids=[])  # the live node renews; the dead one cannot
            traveller.shift(dt.timedelta(seconds=11))
            assert (await newcomer.address_admit(address=VENUE)).allowed  # the dead node's places expired
            assert not (await newcomer.address_admit(address=ATTACKER)).allowed  # the live node's did not
    finally:
        for limits in (dead, alive, newcomer):
            await limits.close()


def _protocols(token: str) -> list[Subprotocol]:
    return [Subprotocol("wedsync.v1"), Subprotocol(f"bearer.{token}")]


async def test_two_nodes_share_the_address_caps(party: WeddingParty, tmp_path: Path) -> None:
    # A long window, and not near its end: the counts must not start again halfway through the test.
    window = 3600
    if window - time.time() % window < 60:
        await asyncio.sleep(window - time.time() % window + 1)
    env = {
        "REALTIME_ADDRESS_HANDSHAKES": "6",
        "REALTIME_ADDRESS_HANDSHAKE_WINDOW_SECONDS": str(window),
        "REALTIME_ADDRESS_CONNECTIONS": "3",
    }
    token = await bearer(party.priya)
    with cluster(tmp_path, extra_env=env) as nodes:
        a, b = nodes.nodes

        async def opened(url: str) -> Any:
            socket = await connect(url, subprotocols=_protocols(token))
            assert json.loads(await socket.recv())["op"] == "welcome"
            return socket

        async def refused(url: str) -> tuple[int | None, dict]:
            async with connect(url, subprotocols=_protocols(token)) as socket:
                frame = json.loads(await socket.recv())
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None, frame

        one, two = await opened(a.url), await opened(a.url)  # handshakes 1, 2
        three = await opened(b.url)  # 3: three open across the nodes
        code, frame = await refused(b.url)  # 4: a fourth open socket, on the other node
        assert (code, frame["code"]) == (1013, "rate_limited")
        await one.close()
        await asyncio.sleep(0.5)  # node a gives the place back
        four = await opened(b.url)  # 5
        for socket in (two, three, four):
            await socket.close()
        await asyncio.sleep(0.5)
        five = await opened(a.url)  # 6: the last handshake of the window
        await five.close()
        code, frame = await refused(b.url)  # 7: one handshake too many, counted on both nodes
        assert (code, frame["code"]) == (1013, "rate_limited")
        assert 0 < frame["retry_after"] <= window
