"""The node hub's background loops keep running whatever one round of them meets."""

from __future__ import annotations

import asyncio

import pytest

from realtime.messages import ControlMessage
from realtime.node import housekeeping
from realtime.node.hub import NodeHub


async def test_presence_reconciliation_survives_a_round_that_fails(settings, monkeypatch) -> None:
    settings.REALTIME_PRESENCE_RECONCILE_SECONDS = 0.01
    hub = NodeHub()
    rounds: list[str] = []
    three_rounds = asyncio.Event()

    async def round_that_fails_first() -> None:
        rounds.append("failed" if not rounds else "ran")
        if len(rounds) == 3:
            three_rounds.set()
        if len(rounds) == 1:
            raise KeyError("a feed's state went missing mid-round")

    monkeypatch.setattr(hub.presence, "reconcile_round", round_that_fails_first)
    loop_task = asyncio.create_task(hub.presence.reconcile_loop())
    try:
        async with asyncio.timeout(5):
            await three_rounds.wait()
    finally:
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
    assert rounds[:3] == ["failed", "ran", "ran"]


class _SessionSocket:
    """Enough of a socket for the hub's access check: whose it is, its session, what it was told."""

    def __init__(self, connection_id: str, *, user_id: int, session_key: str | None) -> None:
        self.connection_id, self.user_id, self.session_key = connection_id, user_id, session_key
        self.token_generation = 0
        self.heartbeat_interval = 30
        self.told: list[ControlMessage] = []

    def on_control(self, message: ControlMessage) -> None:
        self.told.append(message)


@pytest.mark.django_db(transaction=True)
async def test_a_session_socket_that_connects_during_the_access_check_is_not_closed(monkeypatch) -> None:
    from channels.db import database_sync_to_async

    from realtime.selectors import access_snapshot
    from tests.personas import make_wedding_party

    party = await database_sync_to_async(make_wedding_party)()
    hub = NodeHub()
    ended = _SessionSocket("a", user_id=party.ana.user_id, session_key="no-such-session")
    hub.register(ended)  # type: ignore[arg-type]
    newcomer = _SessionSocket("b", user_id=party.ana.user_id, session_key="a-session-made-just-now")
    real = access_snapshot

    def snapshot_while_someone_connects(**kwargs):
        result = real(**kwargs)
        hub.register(newcomer)  # type: ignore[arg-type]  # checked at its own connect, a moment ago
        return result

    monkeypatch.setattr(housekeeping, "access_snapshot", snapshot_while_someone_connects)
    await housekeeping.access_reconcile(hub)
    assert ended.told == [ControlMessage(kind="access_ended", reason="session_ended")]
    assert newcomer.told == []
