"""Staff scope over the API (docs/decisions/0022): a coordinator reads and acts on the weddings
they oversee (their agency's, or assigned to them); anywhere else they are a stranger, refused
and audited exactly as one, and a staff user who is a member somewhere keeps that member's view."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from presence.models import Alert, Emergency
from presence.selectors import presence_snapshot
from presence.services import presence_device_join
from realtime.services.events import member_event_publish
from tests.factories import AlertFactory, MemberFactory, UserFactory, WeddingFactory, device_presence
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from tests.presence.test_alerts_api import as_user
from wedsync.models import AuditLog, CoordinatorAssignment, Wedding

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


@dataclass(frozen=True)
class Day:
    party: WeddingParty
    emergency: Emergency
    alert: Alert
    cora: User  # coordinates for the wedding's agency
    max: User  # coordinates for another agency

    @property
    def wedding_id(self) -> int:
        return self.party.wedding.pk


@pytest.fixture
def day(party: WeddingParty) -> Day:
    published = member_event_publish(
        member=party.carmen, type_name="emergency.alert", data={"message": "Fire", "location": "reception_hall"}
    )
    presence_device_join(device=device_presence(party.paula, location="ceremony_area"))
    return Day(
        party=party,
        emergency=Emergency.objects.get(raised_event_id=published.id),
        alert=AlertFactory(wedding=party.wedding, member=party.olu, severity="critical"),
        cora=make_coordinator(party.wedding, agency="Luz"),
        max=make_coordinator(make_wedding_party().wedding, name="max", agency="Mar"),
    )


# name: (method, path for (wedding, day), the refusal's audit action)
_Call = tuple[str, Callable[[int, Day], str], str]
CALLS: dict[str, _Call] = {
    "presence": ("get", lambda w, d: f"/api/v1/weddings/{w}/presence/", "presence.snapshot.refuse"),
    "emergencies": ("get", lambda w, d: f"/api/v1/weddings/{w}/emergencies/", "presence.emergency.refuse"),
    "resolve": (
        "post",
        lambda w, d: f"/api/v1/weddings/{w}/emergencies/{d.emergency.pk}/resolve/",
        "presence.emergency.refuse",
    ),
    "alerts": ("get", lambda w, d: f"/api/v1/weddings/{w}/alerts/", "presence.alert.refuse"),
    "ack": ("post", lambda w, d: f"/api/v1/weddings/{w}/alerts/{d.alert.pk}/ack/", "presence.alert.refuse"),
}


def call(user: User, name: str, day: Day, wedding_id: int | None = None) -> Any:
    method, path, _action = CALLS[name]
    api = as_user(APIClient(REMOTE_ADDR="198.51.100.7"), user)
    return getattr(api, method)(path(day.wedding_id if wedding_id is None else wedding_id, day))


def nothing_changed(day: Day) -> bool:
    emergency = Emergency.objects.get(pk=day.emergency.pk)
    alert = Alert.objects.get(pk=day.alert.pk)
    return emergency.resolved_at is None and alert.acknowledged_at is None


@pytest.mark.parametrize("name", list(CALLS))
def test_the_weddings_coordinator_is_answered(day: Day, name: str) -> None:
    response = call(day.cora, name, day)
    assert response.status_code == 200, response.content
    assert not AuditLog.objects.filter(outcome="refused").exists()


@pytest.mark.parametrize("name", list(CALLS))
def test_another_agencys_coordinator_is_refused_as_a_stranger_is_and_audited(day: Day, name: str) -> None:
    stranger = UserFactory(username="stranger")
    as_stranger = call(stranger, name, day)
    as_max = call(day.max, name, day)
    assert as_max.status_code == as_stranger.status_code == 403
    assert as_max.json() == as_stranger.json()
    assert as_max.json()["error"]["code"] == "forbidden"
    action = CALLS[name][2]
    entries = {entry.actor_id: entry for entry in AuditLog.objects.filter(action=action, outcome="refused")}
    assert set(entries) == {stranger.pk, day.max.pk}
    theirs, ours = entries[stranger.pk], entries[day.max.pk]
    assert (ours.wedding_id, ours.target, ours.details, ours.ip) == (
        theirs.wedding_id,
        theirs.target,
        theirs.details,
        "198.51.100.7",
    )
    assert nothing_changed(day)


@pytest.mark.parametrize("name", list(CALLS))
def test_a_coordinator_assigned_to_the_wedding_is_answered(day: Day, name: str) -> None:
    CoordinatorAssignment.objects.create(wedding=day.party.wedding, coordinator=day.max, note="covering for Cora")
    assert call(day.max, name, day).status_code == 200


@pytest.mark.parametrize("name", list(CALLS))
def test_a_wedding_of_no_agency_is_for_superusers_only(day: Day, name: str) -> None:
    Wedding.objects.filter(pk=day.wedding_id).update(agency=None)
    assert call(day.cora, name, day).status_code == 403
    assert call(make_superuser(), name, day).status_code == 200


@pytest.mark.parametrize("name", list(CALLS))
def test_a_coordinator_cannot_tell_a_missing_wedding_from_another_agencys(day: Day, name: str) -> None:
    missing = WeddingFactory().pk
    Wedding.objects.filter(pk=missing).delete()
    other = call(day.cora, name, day, wedding_id=WeddingFactory().pk)
    absent = call(day.cora, name, day, wedding_id=missing)
    assert (absent.status_code, absent.json()) == (other.status_code, other.json())
    assert absent.status_code == 403
    if name != "alerts":  # a superuser's list of a missing wedding's alerts is empty, not an error
        assert call(make_superuser(), name, day, wedding_id=missing).status_code == 404


def test_a_staff_user_who_is_a_guest_elsewhere_keeps_the_guests_view(day: Day) -> None:
    MemberFactory(user=day.max, wedding=day.party.wedding, role="guest")
    presence = call(day.max, "presence", day)
    assert presence.json() == presence_snapshot(wedding_id=day.wedding_id, viewer_role="guest").wire
    assert "members" not in presence.json()  # counts only, as for every guest
    assert call(day.max, "emergencies", day).status_code == 200  # every member got the alarm
    assert call(day.max, "resolve", day).status_code == 403
    assert call(day.max, "ack", day).status_code == 403
    assert nothing_changed(day)


def test_a_staff_user_who_plans_a_wedding_outside_their_scope_resolves_as_its_planner(day: Day) -> None:
    max_planning = MemberFactory(user=day.max, wedding=day.party.wedding, role="planner", display_name="Max")
    response = call(day.max, "resolve", day)
    assert response.status_code == 200
    assert response.json()["resolved_by"] == {"member": max_planning.pk, "role": "planner", "name": "Max"}
    assert (
        call(day.max, "presence", day).json()
        == presence_snapshot(wedding_id=day.wedding_id, viewer_role="planner").wire
    )
