"""Presence across two daphne processes on one Redis, and with a real Celery worker running beat:
diffs cross nodes, a SIGKILLed node's members go offline, and a missing photographer is an alert.

Latencies are asserted loosely (PROTOCOL.md's 2 s bound); the benchmark measures them properly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
import zoneinfo
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from realtime.client import RealtimeClient
from tests.personas import WeddingParty, make_wedding_party
from tests.realtime.conftest import bearer
from tests.realtime.nodes import cluster
from tests.servers import celery_worker_with_beat

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

PROPAGATION_BOUND = 2.0  # seconds (PROTOCOL.md section 6)


async def _client(member, url: str) -> RealtimeClient:
    client = RealtimeClient(url, token=await bearer(member))
    await client.start()
    return client


async def _diff_naming(client: RealtimeClient, member_id: int, kind: str, within: float) -> dict:
    """The member's entry in the next diff whose ``kind`` names it, arriving within ``within``."""
    async with asyncio.timeout(within):
        while True:
            frame = await client.next_presence()
            if str(member_id) in frame[kind]:
                return frame[kind][str(member_id)]


async def test_joins_updates_and_leaves_cross_nodes_within_two_seconds(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        a, b = nodes.nodes
        topic = f"wedding:{party.wedding.pk}"
        planner = await _client(party.priya, a.url)
        guest = await _client(party.gil, a.url)
        phone = await _client(party.paula, b.url)
        tablet = await _client(party.paula, a.url)
        try:
            await planner.subscribe(topic)
            await guest.subscribe(topic)

            await phone.subscribe(topic)
            joined = await _diff_naming(planner, party.paula.pk, "joins", PROPAGATION_BOUND)
            assert (joined["status"], joined["devices"], joined["role"]) == ("online", 1, "photographer")

            await phone.set_presence(topic, location="ceremony_area", activity="working", battery=55)
            moved = await _diff_naming(planner, party.paula.pk, "updates", PROPAGATION_BOUND)
            assert (moved["location"], moved["activity"], moved["battery"]) == ("ceremony_area", "working", 55)
            assert planner.presence[topic][str(party.paula.pk)]["location"] == "ceremony_area"

            await tablet.subscribe(topic)  # a second device, on the other node
            merged = await _diff_naming(planner, party.paula.pk, "updates", PROPAGATION_BOUND)
            assert merged["devices"] == 2 and merged["location"] == "ceremony_area"

            await phone.close()
            one_left = await _diff_naming(planner, party.paula.pk, "updates", PROPAGATION_BOUND)
            assert one_left["devices"] == 1
            await tablet.close()
            left = await _diff_naming(planner, party.paula.pk, "leaves", PROPAGATION_BOUND)
            assert left["status"] == "offline"
            assert str(party.paula.pk) not in planner.presence[topic]

            # Guests have counts in their snapshot and never a presence frame.
            assert guest.presence_counts[topic] == {"planner": 1, "guest": 1}
            with pytest.raises(TimeoutError):
                await guest.next_presence(0.3)
        finally:
            for client in (planner, guest, phone, tablet):
                await client.close()


def _party_with_ceremony_in(minutes: int) -> WeddingParty:
    lisbon = zoneinfo.ZoneInfo("Europe/Lisbon")
    ceremony = (timezone.now() + dt.timedelta(minutes=minutes)).astimezone(lisbon)
    return make_wedding_party(date=ceremony.date(), ceremony_at=ceremony, time_zone="Europe/Lisbon")


async def _alert_about(client: RealtimeClient, member_id: int, within: float) -> dict:
    async with asyncio.timeout(within):
        while True:
            frame = await client.next_event()
            if frame.get("type") == "alert.raised" and frame["data"]["member"] == member_id:
                return frame


async def test_with_beat_a_missing_photographer_is_an_alert_and_a_killed_nodes_members_go_offline(
    tmp_path: Path,
) -> None:
    """Issue 5's "done when": two nodes, a Celery worker with beat, a ceremony 25 minutes away."""
    party = await database_sync_to_async(_party_with_ceremony_in)(25)
    topic = f"wedding:{party.wedding.pk}"
    beat = {"PRESENCE_SWEEP_SECONDS": "1", "PRESENCE_ALERT_CHECK_SECONDS": "5"}
    with cluster(tmp_path, extra_env=beat) as nodes:
        a, b = nodes.nodes
        planner = await _client(party.priya, a.url)
        others = [await _client(member, b.url) for member in (party.ana, party.ben, party.olu, party.victor)]
        try:
            await planner.subscribe(topic)
            for client in others:
                await client.subscribe(topic)
            with celery_worker_with_beat(nodes.environment, tmp_path):
                # Everyone who matters is connected but the photographer.
                alert = await _alert_about(planner, party.paula.pk, within=30)
                assert (alert["priority"], alert["data"]["kind"], alert["data"]["severity"]) == (
                    "critical",
                    "key_person_missing",
                    "warning",
                )

                b.signal(signal.SIGKILL)
                killed_at = time.monotonic()
                gone = {m.pk for m in (party.ana, party.ben, party.olu, party.victor)}
                async with asyncio.timeout(30):
                    while gone & {int(m) for m in planner.presence[topic]}:
                        await planner.next_presence()
                offline_after = time.monotonic() - killed_at
                assert set(planner.presence[topic]) == {str(party.priya.pk)}
                # With the key people gone, beat says so too.
                await _alert_about(planner, party.olu.pk, within=30)
            print(f"members of the killed node offline after {offline_after:.1f} s")
        finally:
            for client in (planner, *others):
                client.reconnect = False
                await client.close()
