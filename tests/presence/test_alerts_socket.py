"""Alerts end to end: presence from real sockets, the beat task, ``alert.raised`` on the planner's
socket, and a planner's ``ack`` of it acknowledging the alert."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from presence.alerts.rules import Finding, Subject
from presence.alerts.services import alert_raise
from presence.models import Alert, AlertKind, AlertSeverity
from presence.tasks import evaluate_alerts
from tests.personas import WeddingParty, make_wedding_party
from tests.realtime.conftest import Client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_redis, pytest.mark.requires_postgres]

LISBON = zoneinfo.ZoneInfo("Europe/Lisbon")


def _party_with_ceremony_in(minutes: int) -> WeddingParty:
    ceremony = (timezone.now() + dt.timedelta(minutes=minutes)).astimezone(LISBON)
    return make_wedding_party(date=ceremony.date(), ceremony_at=ceremony, time_zone="Europe/Lisbon")


async def _next_event(client: Client, event_type: str, within: float = 5) -> dict:
    while True:
        frame = await client.receive(within=within)
        if frame.get("op") == "event" and frame.get("type") == event_type:
            return frame


async def test_the_planner_hears_the_photographer_is_missing_25_minutes_before_the_ceremony(sockets) -> None:
    party = await database_sync_to_async(_party_with_ceremony_in)(25)
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    # Everyone who matters is connected but the photographer.
    for member in (party.ana, party.ben, party.olu, party.victor):
        await (await sockets(member)).subscribe(party.wedding.pk)

    changed = await database_sync_to_async(lambda: evaluate_alerts.apply(throw=True).result)()

    assert changed == 1
    frame = await _next_event(planner, "alert.raised")
    assert frame["priority"] == "critical"
    assert frame["from"] is None  # the server's, not a member's
    data = frame["data"]
    assert (data["kind"], data["severity"], data["member"], data["role"], data["notice"]) == (
        "key_person_missing",
        "warning",
        party.paula.pk,
        "photographer",
        "raised",
    )
    assert data["message"].startswith(f"{party.paula.name} (photographer) is not online, 2")
    # The next run has nothing new to say.
    assert await database_sync_to_async(lambda: evaluate_alerts.apply(throw=True).result)() == 0


async def test_a_planners_ack_on_the_socket_acknowledges_the_alert(party: WeddingParty, sockets) -> None:
    planner = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    subject = Subject(kind=AlertKind.LOW_BATTERY, member_id=party.paula.pk, device="phone")
    finding = Finding(subject, AlertSeverity.WARNING, "Paula's phone is at 9 % and not charging.")
    alert = await database_sync_to_async(alert_raise)(wedding_id=party.wedding.pk, finding=finding, now=timezone.now())
    assert alert is not None
    frame = await _next_event(planner, "alert.raised")
    reply = await planner.request("ack", topic=f"wedding:{party.wedding.pk}", seq=frame["seq"])
    assert reply["status"] == "ok"
    done = await database_sync_to_async(Alert.objects.select_related("acknowledged_by").get)(pk=alert.pk)
    assert done.acknowledged_by == party.priya.user


def test_without_redis_the_worker_leaves_alerts_alone(settings) -> None:
    # Embedded, presence lives in the socket process: the worker would see nobody and cry wolf.
    party = _party_with_ceremony_in(10)
    settings.REDIS_URL = None
    assert evaluate_alerts.apply(throw=True).result == 0
    assert not Alert.objects.filter(wedding=party.wedding).exists()
