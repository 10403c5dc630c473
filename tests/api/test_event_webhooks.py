"""Event webhook subscriptions over the staff API (issue 20, decision 0032): for service accounts'
keys with the ``webhooks`` scope only, on weddings their account oversees; the secret shown once
(never in a replay of the create); strangers refused alike whether or not a wedding exists, and
another account's subscription not found; every change and refusal audited."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from monitoring.models import EventWebhook
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from tests.presence.test_alerts_api import as_user
from wedsync.models import ApiScope, AuditLog, ServiceAccount
from wedsync.services.service_accounts import service_account_create, service_account_key_issue

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]

RECEIVER = "https://crm.example.com/hooks/wedsync"


def with_key(account: ServiceAccount) -> APIClient:
    _key, raw = service_account_key_issue(account=account, name="prod", actor=None)
    api = APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return api


def account(party: WeddingParty, *, name: str = "Luz CRM", scopes: list[str] | None = None) -> ServiceAccount:
    return service_account_create(name=name, scopes=scopes or [ApiScope.WEBHOOKS], weddings=[party.wedding], actor=None)


def hooks(wedding_id: int) -> str:
    return f"/api/v1/weddings/{wedding_id}/webhooks/"


def create(api: APIClient, wedding_id: int, body: dict[str, Any], *, key: str = "crm-hook-1") -> Any:
    return api.post(hooks(wedding_id), body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_key_subscribes_and_sees_the_secret_once(party: WeddingParty) -> None:
    crm = account(party)
    api = with_key(crm)
    created = create(api, party.wedding.pk, {"url": RECEIVER, "event_types": ["chat.message", "chat.message"]})
    assert created.status_code == 201, created.json()
    body = created.json()
    webhook = EventWebhook.objects.get()
    assert body["secret"] == webhook.secret and body["secret"].startswith("whsec_")
    assert created["Location"] == f"{hooks(party.wedding.pk)}{webhook.pk}/"
    assert {key: body[key] for key in ("id", "wedding", "url", "event_types", "is_active", "last_delivered_seq")} == {
        "id": webhook.pk,
        "wedding": party.wedding.pk,
        "url": RECEIVER,
        "event_types": ["chat.message"],
        "is_active": True,
        "last_delivered_seq": 0,
    }
    listed = api.get(hooks(party.wedding.pk)).json()
    assert [(one["id"], one["secret"]) for one in listed] == [(webhook.pk, None)]
    assert api.get(created["Location"]).json()["secret"] is None

    replay = create(api, party.wedding.pk, {"url": RECEIVER, "event_types": ["chat.message", "chat.message"]})
    assert (replay.status_code, replay["Idempotent-Replayed"], replay["Location"]) == (201, "true", created["Location"])
    assert replay.json() == {**body, "secret": None}  # the stored answer never held the secret
    assert EventWebhook.objects.count() == 1
    entry = AuditLog.objects.get(action="api.webhook.create")
    assert (entry.actor_id, entry.wedding_id, entry.target) == (crm.user.pk, party.wedding.pk, f"webhook:{webhook.pk}")
    assert webhook.secret not in str(entry.details)


def test_rotate_shows_a_new_secret_and_delete_unsubscribes(party: WeddingParty) -> None:
    api = with_key(account(party))
    created = create(api, party.wedding.pk, {"url": RECEIVER}).json()
    address = f"{hooks(party.wedding.pk)}{created['id']}/"
    rotated = api.post(f"{address}rotate-secret/")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (None, created["secret"])
    assert EventWebhook.objects.get().secret == rotated.json()["secret"]
    assert api.delete(address).status_code == 204
    assert api.get(address).status_code == 404
    assert api.delete(address).status_code == 404
    actions = list(AuditLog.objects.filter(action__startswith="api.webhook.").order_by("pk").values_list("action"))
    assert actions == [("api.webhook.create",), ("api.webhook.rotate",), ("api.webhook.delete",)]


def test_a_paused_subscription_is_resumed_by_its_key(party: WeddingParty) -> None:
    api = with_key(account(party))
    created = create(api, party.wedding.pk, {"url": RECEIVER}).json()
    EventWebhook.objects.filter(pk=created["id"]).update(is_active=False, pause_reason="10 attempts failed")
    shown = api.get(f"{hooks(party.wedding.pk)}{created['id']}/").json()
    assert (shown["is_active"], shown["pause_reason"]) == (False, "10 attempts failed")
    resumed = api.post(f"{hooks(party.wedding.pk)}{created['id']}/resume/")
    assert (resumed.status_code, resumed.json()["is_active"], resumed.json()["pause_reason"]) == (200, True, "")
    again = api.post(f"{hooks(party.wedding.pk)}{created['id']}/resume/")
    assert again.status_code == 200  # idempotent
    assert AuditLog.objects.filter(action="api.webhook.resume").count() == 1


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://crm.example.com/hooks", "http:// only with DEBUG on or to a loopback host"),
        ("ftp://crm.example.com/hooks", "must be an https:// URL with a host"),
        ("https:///no-host", "must be an https:// URL with a host"),
        ("crm.example.com", "must be an https:// URL with a host"),
    ],
)
def test_the_escalation_webhook_url_rules_apply(party: WeddingParty, url: str, problem: str) -> None:
    answer = create(with_key(account(party)), party.wedding.pk, {"url": url})
    assert answer.status_code == 422
    assert problem in answer.json()["error"]["fields"]["url"][0]
    assert not EventWebhook.objects.exists()


def test_loopback_http_is_allowed_and_a_bad_type_is_the_schemas_400(party: WeddingParty) -> None:
    api = with_key(account(party))
    assert create(api, party.wedding.pk, {"url": "http://127.0.0.1:9/hook"}, key="a").status_code == 201
    unknown = create(api, party.wedding.pk, {"url": RECEIVER, "event_types": ["chat.whisper"]}, key="b")
    assert (unknown.status_code, list(unknown.json()["error"]["fields"])) == (400, ["event_types"])
    assert create(api, party.wedding.pk, {"url": RECEIVER}, key="").status_code == 400
    missing = api.post(hooks(party.wedding.pk), {"url": RECEIVER}, format="json")
    assert missing.status_code == 428


def test_a_service_account_holds_a_bounded_number_per_wedding(party: WeddingParty) -> None:
    api = with_key(account(party))
    for n in range(10):
        assert create(api, party.wedding.pk, {"url": RECEIVER}, key=f"k{n}").status_code == 201
    refused = create(api, party.wedding.pk, {"url": RECEIVER}, key="k10")
    assert refused.status_code == 422 and "at most 10" in refused.json()["error"]["fields"]["non_field_errors"][0]


def test_people_are_refused_even_staff_who_oversee_the_wedding(party: WeddingParty) -> None:
    for person in (make_coordinator(party.wedding), party.priya.user, make_superuser()):
        api = as_user(APIClient(), person)
        answer = api.get(hooks(party.wedding.pk))
        assert answer.status_code == 403, person
        assert "service accounts" in answer.json()["error"]["message"]
        assert create(api, party.wedding.pk, {"url": RECEIVER}).status_code == 403
    assert not EventWebhook.objects.exists()
    assert AuditLog.objects.filter(action="api.refuse", details__op="webhooks create").count() == 3


def test_a_key_needs_the_webhooks_scope_even_to_read(party: WeddingParty) -> None:
    api = with_key(account(party, scopes=[ApiScope.READ, ApiScope.PUBLISH]))
    answer = api.get(hooks(party.wedding.pk))
    assert answer.status_code == 403
    assert "'webhooks' scope" in answer.json()["error"]["message"]
    assert create(api, party.wedding.pk, {"url": RECEIVER}).status_code == 403


def test_a_wedding_outside_the_scope_is_refused_alike_whether_or_not_it_exists(party: WeddingParty) -> None:
    api = with_key(account(party))
    other = make_wedding_party(slug="not-ours")
    answers = [api.get(hooks(wedding_id)) for wedding_id in (other.wedding.pk, 987_654_321)]
    assert [answer.status_code for answer in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()
    posted = [create(api, wedding_id, {"url": RECEIVER}) for wedding_id in (other.wedding.pk, 987_654_321)]
    assert [answer.status_code for answer in posted] == [403, 403]
    refusals = AuditLog.objects.filter(action="api.refuse", details__op__startswith="webhooks ")
    assert refusals.count() == 4
    assert api.get(hooks(2**63)).status_code == 404  # past a bigint: no wedding can have that id


def test_another_accounts_subscription_is_not_found_like_one_that_does_not_exist(party: WeddingParty) -> None:
    ours, theirs = with_key(account(party)), with_key(account(party, name="Other CRM"))
    theirs_id = create(theirs, party.wedding.pk, {"url": RECEIVER}).json()["id"]
    assert ours.get(hooks(party.wedding.pk)).json() == []
    for address in (f"{hooks(party.wedding.pk)}{theirs_id}/", f"{hooks(party.wedding.pk)}999999/"):
        assert ours.get(address).status_code == 404
        assert ours.delete(address).status_code == 404
        assert ours.post(f"{address}rotate-secret/").status_code == 404
        assert ours.post(f"{address}resume/").status_code == 404
    assert EventWebhook.objects.filter(pk=theirs_id).exists()
