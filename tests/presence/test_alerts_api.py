"""The staff API for alerts: who may list and acknowledge them, and what a refusal looks like."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from presence.models import Alert, AlertKind
from tests.factories import AlertFactory
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from wedsync.models import AuditLog, Member
from wedsync.services.auth import access_token_issue

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres]


@pytest.fixture
def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")


def as_user(api: APIClient, user) -> APIClient:
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_issue(user=user)}")
    return api


def as_member(api: APIClient, member: Member) -> APIClient:
    return as_user(api, member.user)


def alerts_url(party: WeddingParty) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/alerts/"


def ack_url(alert: Alert) -> str:
    return f"/api/v1/weddings/{alert.wedding_id}/alerts/{alert.pk}/ack/"


@pytest.fixture
def alerts(party: WeddingParty) -> dict[str, Alert]:
    return {
        "open": AlertFactory(wedding=party.wedding, member=party.paula, severity="critical"),
        "resolved": AlertFactory(
            wedding=party.wedding,
            kind=AlertKind.LOW_BATTERY,
            member=party.carmen,
            device="phone",
            resolved_at="2026-06-13T10:00Z",
        ),
    }


def test_the_planner_lists_open_alerts_by_default_and_others_on_request(
    api: APIClient, party: WeddingParty, alerts: dict[str, Alert], django_assert_max_num_queries
) -> None:
    as_member(api, party.priya)
    with django_assert_max_num_queries(6):  # auth, membership, one read whatever the number of alerts
        body = api.get(alerts_url(party)).json()
    assert [a["id"] for a in body["alerts"]] == [alerts["open"].pk]
    assert body["more"] is False
    first = body["alerts"][0]
    assert first["member"] == {"id": party.paula.pk, "role": "photographer", "name": party.paula.name}
    assert (first["kind"], first["severity"], first["open"], first["acknowledged_by"]) == (
        "key_person_missing",
        "critical",
        True,
        None,
    )
    assert [a["id"] for a in api.get(alerts_url(party), {"state": "resolved"}).json()["alerts"]] == [
        alerts["resolved"].pk
    ]
    every = api.get(alerts_url(party), {"state": "all", "limit": "1"}).json()
    assert (len(every["alerts"]), every["more"]) == (1, True)


@pytest.mark.parametrize(
    ("query", "field"), [({"state": "closed"}, "state"), ({"limit": "0"}, "limit"), ({"limit": "lots"}, "limit")]
)
def test_bad_queries_are_invalid_and_named(
    api: APIClient, party: WeddingParty, query: dict[str, str], field: str
) -> None:
    response = as_member(api, party.priya).get(alerts_url(party), query)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert field in response.json()["error"]["fields"]


@pytest.mark.parametrize("who", ["priya", "ana", "ben"])
def test_the_planner_and_the_couple_acknowledge(
    api: APIClient, party: WeddingParty, alerts: dict[str, Alert], who: str
) -> None:
    member: Member = getattr(party, who)
    response = as_member(api, member).post(ack_url(alerts["open"]))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["acknowledged_by"] == member.user.username
    assert body["acknowledged_at"] is not None
    entry = AuditLog.objects.get(action="presence.alert.ack")
    assert (entry.outcome, entry.actor_id, entry.wedding_id, entry.target) == (
        "success",
        member.user_id,
        party.wedding.pk,
        f"alert:{alerts['open'].pk}",
    )


def test_acknowledging_twice_keeps_the_first(api: APIClient, party: WeddingParty, alerts: dict[str, Alert]) -> None:
    as_member(api, party.priya).post(ack_url(alerts["open"]))
    second = as_member(APIClient(), party.ana).post(ack_url(alerts["open"]))
    assert second.status_code == 200
    assert second.json()["acknowledged_by"] == party.priya.user.username
    assert AuditLog.objects.filter(action="presence.alert.ack").count() == 1


def test_the_weddings_coordinator_acknowledges_its_alerts(
    api: APIClient, party: WeddingParty, alerts: dict[str, Alert]
) -> None:
    staff = make_coordinator(party.wedding)
    response = as_user(api, staff).post(ack_url(alerts["open"]))
    assert response.status_code == 200
    assert Alert.objects.get(pk=alerts["open"].pk).acknowledged_by == staff
    assert as_user(APIClient(), staff).get(alerts_url(party)).status_code == 200


@pytest.mark.parametrize("who", ["paula", "victor", "gil"])
def test_anyone_else_is_refused_and_audited(
    api: APIClient, party: WeddingParty, alerts: dict[str, Alert], who: str
) -> None:
    member: Member = getattr(party, who)
    as_member(api, member)
    for call, op in (
        ((lambda: api.post(ack_url(alerts["open"]))), "ack"),
        ((lambda: api.get(alerts_url(party))), "list"),
    ):
        response = call()
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        entry = AuditLog.objects.filter(action="presence.alert.refuse").latest("id")
        assert (entry.outcome, entry.actor_id, entry.details["op"]) == ("refused", member.user_id, op)
    assert AuditLog.objects.filter(action="presence.alert.refuse").count() == 2  # once each, not twice
    assert Alert.objects.get(pk=alerts["open"].pk).acknowledged_at is None


def test_a_planner_of_another_wedding_is_refused(api: APIClient, party: WeddingParty, alerts: dict[str, Alert]) -> None:
    other = make_wedding_party()
    assert as_member(api, other.priya).post(ack_url(alerts["open"])).status_code == 403
    # Their own wedding's path does not reach another wedding's alert either.
    response = api.post(f"/api/v1/weddings/{other.wedding.pk}/alerts/{alerts['open'].pk}/ack/")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


def test_an_inactive_planner_is_refused(api: APIClient, party: WeddingParty, alerts: dict[str, Alert]) -> None:
    token_first = as_member(api, party.priya)
    Member.objects.filter(pk=party.priya.pk).update(is_active=False)
    assert token_first.post(ack_url(alerts["open"])).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/weddings/1/alerts/999999/ack/",
        "/api/v1/weddings/99999999999999999999/alerts/1/ack/",
        "/api/v1/weddings/1/alerts/99999999999999999999/ack/",
    ],
)
def test_unknown_alerts_are_not_found(api: APIClient, party: WeddingParty, path: str) -> None:
    response = as_user(api, make_superuser()).post(path)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


def test_anonymous_callers_are_unauthorized(api: APIClient, party: WeddingParty, alerts: dict[str, Alert]) -> None:
    for response in (api.get(alerts_url(party)), api.post(ack_url(alerts["open"]))):
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")


def test_the_schema_describes_the_alert_endpoints(api: APIClient) -> None:
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/v1/weddings/{wedding_id}/alerts/" in schema
    assert "/api/v1/weddings/{wedding_id}/alerts/{alert_id}/ack/" in schema
