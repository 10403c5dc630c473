"""The presence snapshot over the staff API: the subscribe reply's ``data.presence`` for the caller's
role, from the real presence store in Redis; staff see what a planner sees."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from presence.selectors import presence_snapshot
from presence.services import presence_device_join, presence_state_set
from presence.state import StateChange
from realtime.services.events import member_event_publish
from tests.factories import device_presence
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from tests.presence.test_alerts_api import as_member, as_user
from wedsync.models import AuditLog, Member

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


@pytest.fixture
def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")


def url(party: WeddingParty) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/presence/"


@pytest.fixture
def online(party: WeddingParty) -> WeddingParty:
    """Paula at the ceremony, Priya and Gil online."""
    for member, location in ((party.paula, "ceremony_area"), (party.priya, None), (party.gil, None)):
        presence_device_join(device=device_presence(member, device=f"dev-{member.pk}", location=location))
    return party


def test_the_planner_sees_everyone_where_they_are(api: APIClient, online: WeddingParty) -> None:
    body = as_member(api, online.priya).get(url(online)).json()
    assert body["online"] == {"photographer": 1, "planner": 1, "guest": 1}
    assert set(body["members"]) == {str(online.paula.pk), str(online.priya.pk), str(online.gil.pk)}
    paula = body["members"][str(online.paula.pk)]
    assert (paula["status"], paula["location"], paula["devices"]) == ("online", "ceremony_area", 1)
    assert body == presence_snapshot(wedding_id=online.wedding.pk, viewer_role="planner").wire


def test_a_guest_gets_counts_only(api: APIClient, online: WeddingParty) -> None:
    body = as_member(api, online.gil).get(url(online)).json()
    assert body == {"online": {"photographer": 1, "planner": 1, "guest": 1}}


def test_the_weddings_coordinator_sees_what_a_planner_sees(api: APIClient, online: WeddingParty) -> None:
    body = as_user(api, make_coordinator(online.wedding)).get(url(online)).json()
    assert body == presence_snapshot(wedding_id=online.wedding.pk, viewer_role="planner").wire
    assert "members" in body
    missing = as_user(api, make_superuser()).get("/api/v1/weddings/999999/presence/")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_a_guests_emergency_location_is_for_the_planner_and_the_venue(api: APIClient, online: WeddingParty) -> None:
    member_event_publish(member=online.carmen, type_name="emergency.alert", data={"message": "Fire"})
    presence_state_set(
        wedding_id=online.wedding.pk,
        member_id=online.gil.pk,
        role=online.gil.role,
        user_id=online.gil.user_id,
        device=f"dev-{online.gil.pk}",
        state=StateChange(location="parking"),
    )
    gil = str(online.gil.pk)
    assert as_member(api, online.priya).get(url(online)).json()["members"][gil]["location"] == "parking"
    assert as_member(APIClient(), online.victor).get(url(online)).json()["members"][gil]["location"] == "parking"
    photographer = as_member(APIClient(), online.paula).get(url(online)).json()["members"][gil]
    assert "parking" not in photographer.values()


@pytest.mark.parametrize("who", ["stranger", "inactive"])
def test_strangers_and_former_members_are_refused_and_audited(api: APIClient, online: WeddingParty, who: str) -> None:
    if who == "stranger":
        member = make_wedding_party().priya  # a planner, but of another wedding
    else:
        member = online.carmen
        Member.objects.filter(pk=member.pk).update(is_active=False)
    response = as_member(api, member).get(url(online))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    entry = AuditLog.objects.get(action="presence.snapshot.refuse")
    assert (entry.outcome, entry.actor_id, entry.wedding_id, entry.ip, entry.details["op"]) == (
        "refused",
        member.user_id,
        online.wedding.pk,
        "198.51.100.7",
        "presence",
    )
    assert not AuditLog.objects.filter(action="api.refuse").exists()


def test_anonymous_callers_are_unauthorized(api: APIClient, party: WeddingParty) -> None:
    response = api.get(url(party))
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")


def test_a_presence_store_that_does_not_answer_is_503_unavailable_not_an_error_page(
    api: APIClient, party: WeddingParty, settings
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: connections are refused
    response = as_member(api, party.priya).get(url(party))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response["Retry-After"] == "5"
