"""The staff API and the admin for emergencies: who may list and resolve them, and what a refusal
looks like."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from presence.models import Emergency
from realtime.models import Event
from realtime.services.events import member_event_publish
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from tests.presence.test_alerts_api import as_member, as_user
from wedsync.models import AuditLog, Member

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres]


@pytest.fixture
def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")


def alarm(member: Member, message: str = "Fire in the kitchen") -> Emergency:
    published = member_event_publish(
        member=member, type_name="emergency.alert", data={"message": message, "location": "reception_hall"}
    )
    return Emergency.objects.get(raised_event_id=published.id)


def list_url(party: WeddingParty) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/emergencies/"


def resolve_url(emergency: Emergency, wedding_id: int | None = None) -> str:
    return f"/api/v1/weddings/{wedding_id or emergency.wedding_id}/emergencies/{emergency.pk}/resolve/"


def test_members_list_open_emergencies_by_default_and_others_on_request(
    api: APIClient, party: WeddingParty, django_assert_max_num_queries
) -> None:
    old = alarm(party.victor, "Power cut")
    Emergency.objects.filter(pk=old.pk).update(resolved_at="2026-06-13T10:00Z", resolved_by=party.priya.user)
    fire = alarm(party.carmen)
    as_member(api, party.gil)  # a guest got the alarm too: they may see it
    with django_assert_max_num_queries(6):
        body = api.get(list_url(party)).json()
    assert [e["id"] for e in body["emergencies"]] == [fire.pk]
    first = body["emergencies"][0]
    assert first == {
        "id": fire.pk,
        "wedding": party.wedding.pk,
        "alert_seq": Event.objects.get(pk=fire.raised_event_id).seq,
        "message": "Fire in the kitchen",
        "location": "reception_hall",
        "raised_by": {"id": party.carmen.pk, "role": "caterer", "name": party.carmen.name},
        "raised_at": first["raised_at"],
        "repeats": 0,
        "repeated_at": None,
        "resolved_at": None,
        "resolved_by": None,
        "open": True,
    }
    resolved = api.get(list_url(party), {"state": "resolved"}).json()["emergencies"]
    assert [e["id"] for e in resolved] == [old.pk]
    assert resolved[0]["resolved_by"] == {"member": party.priya.pk, "role": "planner", "name": party.priya.name}
    every = api.get(list_url(party), {"state": "all", "limit": "1"}).json()
    assert (len(every["emergencies"]), every["more"]) == (1, True)
    assert api.get(list_url(party), {"state": "closed"}).status_code == 400


def test_the_planner_resolves_over_the_api_once(api: APIClient, party: WeddingParty) -> None:
    fire = alarm(party.carmen)
    as_member(api, party.priya)
    response = api.post(resolve_url(fire))
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["open"], body["resolved_by"]["member"]) == (False, party.priya.pk)
    again = api.post(resolve_url(fire))
    assert (again.status_code, again.json()["resolved_at"]) == (200, body["resolved_at"])
    assert Event.objects.filter(type="emergency.resolved").count() == 1
    entry = AuditLog.objects.get(action="presence.emergency.resolve")
    assert (entry.actor_id, entry.ip, entry.user_agent) == (party.priya.user_id, "198.51.100.7", "wedsync-tests/1.0")
    assert api.get(list_url(party)).json()["emergencies"] == []


@pytest.mark.parametrize("who", ["ana", "victor", "carmen", "gil"])
def test_anyone_but_the_planner_and_staff_is_refused_and_audited(api: APIClient, party: WeddingParty, who: str) -> None:
    fire = alarm(party.carmen)
    member: Member = getattr(party, who)
    response = as_member(api, member).post(resolve_url(fire))
    assert response.status_code == 403
    assert response.json() == {
        "error": {"code": "forbidden", "message": "Only staff and the wedding's planner may resolve an emergency."}
    }
    entry = AuditLog.objects.get(action="presence.emergency.refuse")
    assert (entry.outcome, entry.actor_id, entry.target, entry.ip) == (
        "refused",
        member.user_id,
        f"emergency:{fire.pk}",
        "198.51.100.7",
    )
    assert not AuditLog.objects.filter(action="api.refuse").exists()  # once, by the service
    assert Emergency.objects.get(pk=fire.pk).resolved_at is None


def test_the_weddings_coordinator_resolves_and_a_superuser_is_told_unknown_ones_are_not_found(
    api: APIClient, party: WeddingParty
) -> None:
    fire = alarm(party.carmen)
    as_user(api, make_coordinator(party.wedding))
    assert api.post(resolve_url(fire)).json()["resolved_by"]["role"] == "staff"
    as_user(api, make_superuser())
    for path in (
        f"/api/v1/weddings/{party.wedding.pk}/emergencies/999999/resolve/",
        f"/api/v1/weddings/{party.wedding.pk}/emergencies/99999999999999999999/resolve/",
        "/api/v1/weddings/99999999999999999999/emergencies/",
    ):
        response = api.get(path) if path.endswith("emergencies/") else api.post(path)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), path


def test_another_weddings_emergency_is_not_found_through_ones_own_wedding(api: APIClient, party: WeddingParty) -> None:
    fire = alarm(party.carmen)
    other = make_wedding_party()
    as_member(api, other.priya)
    assert api.post(resolve_url(fire)).status_code == 403  # not their wedding
    response = api.post(resolve_url(fire, wedding_id=other.wedding.pk))
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert Emergency.objects.get(pk=fire.pk).resolved_at is None


def test_strangers_may_not_list_and_are_audited(api: APIClient, party: WeddingParty) -> None:
    alarm(party.carmen)
    stranger = make_wedding_party().gil
    response = as_member(api, stranger).get(list_url(party))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    entry = AuditLog.objects.get(action="presence.emergency.refuse")
    assert (entry.actor_id, entry.wedding_id, entry.details["op"]) == (stranger.user_id, party.wedding.pk, "list")
    assert APIClient().get(list_url(party)).status_code == 401


def test_the_schema_describes_the_emergency_endpoints(api: APIClient) -> None:
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/v1/weddings/{wedding_id}/emergencies/" in schema
    assert "/api/v1/weddings/{wedding_id}/emergencies/{emergency_id}/resolve/" in schema
    assert "/api/v1/weddings/{wedding_id}/presence/" in schema


# --- The admin ---------------------------------------------------------------------------------------------


@pytest.fixture
def coordinator(db: None) -> Client:
    user = get_user_model().objects.create_superuser(username="coordinator", password="x" * 20)
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_lists_emergencies_and_resolves_them_through_the_service(
    coordinator: Client, party: WeddingParty
) -> None:
    fire = alarm(party.carmen)
    page = coordinator.get("/admin/presence/emergency/", {"state": "open"})
    assert page.status_code == 200
    assert "Fire in the kitchen" in page.content.decode()
    response = coordinator.post(
        "/admin/presence/emergency/", {"action": "resolve", "_selected_action": [str(fire.pk)]}, follow=True
    )
    assert "Resolved 1 emergency(ies)." in response.content.decode()
    assert Emergency.objects.get(pk=fire.pk).resolved_at is not None
    assert Event.objects.filter(type="emergency.resolved").count() == 1
    assert AuditLog.objects.filter(action="presence.emergency.resolve", target=f"emergency:{fire.pk}").count() == 1
    assert coordinator.get(f"/admin/presence/emergency/{fire.pk}/change/").status_code == 200  # read-only view
    assert coordinator.post(f"/admin/presence/emergency/{fire.pk}/delete/").status_code == 403
