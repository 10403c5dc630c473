"""Publishing over HTTP (issue 20): a member as themselves (the socket's rules), overseeing staff and
keys with `publish` an announcement as staff; once per Idempotency-Key; refusals answered in words,
audited where they concern access, never stored as the key's answer."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from realtime.models import Event
from tests.personas import WeddingParty, make_coordinator, make_wedding_party
from tests.presence.test_alerts_api import as_user
from wedsync.models import AuditLog
from wedsync.services.service_accounts import service_account_create, service_account_key_issue

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]

ANNOUNCEMENT = {"type": "chat.message", "data": {"text": "Buses leave at 23:30"}, "priority": "high"}


def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")


def url(party: WeddingParty) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/events/"


def keyed(party: WeddingParty, scopes: list[str]) -> APIClient:
    account = service_account_create(name=f"CRM {scopes}", scopes=scopes, weddings=[party.wedding], actor=None)
    _key, raw = service_account_key_issue(account=account, name="prod", actor=None)
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


def test_a_coordinator_announces_once_however_often_it_is_retried(party: WeddingParty) -> None:
    cora = make_coordinator(party.wedding)
    client = as_user(api(), cora)
    first = client.post(url(party), ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY="buses")
    assert first.status_code == 201, first.json()
    again = client.post(url(party), ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY="buses")
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    event = Event.objects.get(wedding=party.wedding)
    assert (event.seq, event.priority, event.sender) == (
        first.json()["seq"],
        3,
        {"name": cora.get_full_name(), "role": "staff"},
    )
    assert set(event.audience_roles) >= {"guest", "planner", "couple"}


def test_a_key_announces_with_publish_and_not_without(party: WeddingParty) -> None:
    answer = keyed(party, ["read", "publish"]).post(url(party), ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert answer.status_code == 201
    assert Event.objects.get(wedding=party.wedding).sender == {"name": "CRM ['read', 'publish']", "role": "staff"}
    refused = keyed(party, ["read"]).post(url(party), ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert refused.status_code == 403 and "'publish' scope" in refused.json()["error"]["message"]


def test_a_member_publishes_as_themselves_under_the_sockets_rules(party: WeddingParty) -> None:
    status = {"type": "vendor.status", "data": {"activity": "en_route", "eta_minutes": 10}}
    answer = as_user(api(), party.paula.user).post(url(party), status, format="json", HTTP_IDEMPOTENCY_KEY="s")
    assert answer.status_code == 201, answer.json()
    assert Event.objects.get(wedding=party.wedding).sender_member_id == party.paula.pk
    refused = as_user(api(), party.gil.user).post(url(party), status, format="json", HTTP_IDEMPOTENCY_KEY="s")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


def test_staff_publish_announcements_only_and_strangers_are_refused_and_audited(party: WeddingParty) -> None:
    client = as_user(api(), make_coordinator(party.wedding))
    status = {"type": "vendor.status", "data": {"activity": "en_route"}}
    assert client.post(url(party), status, format="json", HTTP_IDEMPOTENCY_KEY="a").status_code == 422
    loud = {**ANNOUNCEMENT, "priority": "emergency"}
    assert client.post(url(party), loud, format="json", HTTP_IDEMPOTENCY_KEY="b").status_code == 422
    stranger = as_user(api(), make_wedding_party().priya.user)
    refused = stranger.post(url(party), ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY="c")
    assert refused.status_code == 403
    assert AuditLog.objects.filter(action="realtime.publish.refuse", target=f"wedding:{party.wedding.pk}").exists()
    assert not Event.objects.filter(wedding=party.wedding).exists()


def test_each_credential_has_its_publish_rate_and_a_refusal_is_not_kept(party: WeddingParty, settings) -> None:
    settings.API_PUBLISH_RATE = "2/min"
    client = as_user(api(), make_coordinator(party.wedding))
    codes = [
        client.post(url(party), ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY=f"r{i}").status_code for i in range(3)
    ]
    assert codes == [201, 201, 429]
    limited = client.post(url(party), ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY="r2")
    assert limited.status_code == 429 and limited.json()["error"]["retry_after"] > 0
    assert int(limited["Retry-After"]) >= limited.json()["error"]["retry_after"]
    assert "Idempotent-Replayed" not in limited  # answered again, not replayed: the retry may succeed later


def test_a_nul_character_is_refused_in_words_not_a_server_error(party: WeddingParty) -> None:
    body = {"type": "chat.message", "data": {"text": "a\u0000b"}}
    answer = as_user(api(), party.priya.user).post(url(party), body, format="json", HTTP_IDEMPOTENCY_KEY="nul")
    assert answer.status_code == 422 and "NUL characters" in answer.json()["error"]["message"]


def test_a_superuser_publishing_to_no_wedding_is_told_so(party: WeddingParty) -> None:
    from tests.personas import make_superuser

    answer = as_user(api(), make_superuser()).post(
        "/api/v1/weddings/987654/events/", ANNOUNCEMENT, format="json", HTTP_IDEMPOTENCY_KEY="none"
    )
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_a_lone_surrogate_anywhere_is_refused_in_words(party: WeddingParty) -> None:
    body = '{"type": "chat.message", "data": {"text": "hi"}, "to": ["role:\\udb2f"]}'  # escaped, as JSON allows
    client = as_user(api(), party.priya.user)
    answer = client.post(url(party), body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="sur")
    assert answer.status_code == 422 and "surrogates" in answer.json()["error"]["message"]


def test_control_characters_in_to_are_an_unknown_target_not_a_malformed_request(party: WeddingParty) -> None:
    body = {"type": "chat.message", "data": {"text": "hi"}, "to": ["\u001e\u001e"]}
    answer = as_user(api(), party.priya.user).post(url(party), body, format="json", HTTP_IDEMPOTENCY_KEY="rs")
    assert answer.status_code == 422, answer.json()
