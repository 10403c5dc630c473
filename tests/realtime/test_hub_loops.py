"""The node hub's background loops keep running whatever one round of them meets."""

from __future__ import annotations

import asyncio

import pytest

from realtime.hub import NodeHub


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

    monkeypatch.setattr(hub, "_presence_reconcile_round", round_that_fails_first)
    loop_task = asyncio.create_task(hub._presence_reconcile_loop())
    try:
        async with asyncio.timeout(5):
            await three_rounds.wait()
    finally:
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
    assert rounds[:3] == ["failed", "ran", "ran"]
