"""Service accounts and their API keys (issue 20, decision 0030): shown once, stored hashed, scoped to
an agency or named weddings and to what they may do, rotatable with a grace period, revocable, rate
limited per key, last use recorded, every refusal audited."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import AlertFactory, UserFactory
from tests.personas import WeddingParty, make_wedding_party
from wedsync.models import Agency, ApiScope, AuditLog, ServiceAccount, ServiceAccountKey
from wedsync.selectors import weddings_overseen
from wedsync.services.service_accounts import (
    service_account_create,
    service_account_key_issue,
    service_account_key_revoke,
    service_account_key_rotate,
)

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


@pytest.fixture
def crm(party: WeddingParty) -> ServiceAccount:
    """Luz CRM: reads the party's wedding, named (not through an agency)."""
    return service_account_create(name="Luz CRM", scopes=[ApiScope.READ], weddings=[party.wedding], actor=None)


def with_key(raw: str, *, keyword: str = "Api-Key") -> APIClient:
    api = APIClient(REMOTE_ADDR="198.51.100.7")
    api.credentials(HTTP_AUTHORIZATION=f"{keyword} {raw}")
    return api


def alerts_url(party: WeddingParty) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/alerts/"


def test_a_key_is_stored_hashed_and_its_account_signs_in_nowhere(crm: ServiceAccount) -> None:
    key, raw = service_account_key_issue(account=crm, name="prod", actor=None)
    prefix, secret = raw.split(".")
    stored = ServiceAccountKey.objects.get(pk=key.pk)
    assert stored.prefix == prefix and secret not in stored.hashed_key and raw not in stored.id
    assert not crm.user.has_usable_password()
    assert crm.user.is_staff and not crm.user.is_superuser
    assert AuditLog.objects.filter(action="api.key.issue", target=f"api_key:{prefix}").exists()


@pytest.mark.parametrize("keyword", ["Api-Key", "Bearer"])
def test_a_key_reads_its_weddings_with_either_header(party: WeddingParty, crm: ServiceAccount, keyword: str) -> None:
    AlertFactory(wedding=party.wedding, member=party.olu, message="Olu is not online.")
    _key, raw = service_account_key_issue(account=crm, name="prod", actor=None)
    response = with_key(raw, keyword=keyword).get(alerts_url(party))
    assert response.status_code == 200, response.json()
    assert [alert["message"] for alert in response.json()["alerts"]] == ["Olu is not online."]


def test_a_wedding_outside_the_accounts_scope_is_refused_as_for_a_stranger(crm: ServiceAccount) -> None:
    other = make_wedding_party()
    _key, raw = service_account_key_issue(account=crm, name="prod", actor=None)
    response = with_key(raw).get(alerts_url(other))
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert AuditLog.objects.filter(action="presence.alert.refuse", actor=crm.user, outcome="refused").exists()


def test_an_agency_account_oversees_the_agencys_weddings_while_active(party: WeddingParty) -> None:
    agency = Agency.objects.create(name="Luz Weddings")
    party.wedding.agency = agency
    party.wedding.save(update_fields=["agency"])
    elsewhere = make_wedding_party().wedding
    account = service_account_create(name="Luz SMS", scopes=[ApiScope.READ], agency=agency, actor=None)
    assert list(weddings_overseen(user=account.user)) == [party.wedding]
    assert elsewhere not in weddings_overseen(user=account.user)
    ServiceAccount.objects.filter(pk=account.pk).update(is_active=False)
    assert list(weddings_overseen(user=User.objects.get(pk=account.user_id))) == []


def test_what_a_key_may_do_is_its_accounts_scopes(party: WeddingParty, crm: ServiceAccount) -> None:
    alert = AlertFactory(wedding=party.wedding, member=party.olu)
    _key, raw = service_account_key_issue(account=crm, name="prod", actor=None)
    ack = with_key(raw).post(f"/api/v1/weddings/{party.wedding.pk}/alerts/{alert.pk}/ack/")
    assert ack.status_code == 403 and "sign in as a person" in ack.json()["error"]["message"]
    ServiceAccount.objects.filter(pk=crm.pk).update(scopes=[])
    read = with_key(raw).get(alerts_url(party))
    assert read.status_code == 403 and "'read' scope" in read.json()["error"]["message"]
    refusals = AuditLog.objects.filter(action="api.refuse", actor=crm.user, details__reason="permission_denied")
    assert refusals.count() == 2


def test_a_key_with_read_scope_gets_a_ticket_for_an_observer_socket(crm: ServiceAccount) -> None:
    _key, raw = service_account_key_issue(account=crm, name="prod", actor=None)
    response = with_key(raw).post(reverse("realtime-ticket"))
    assert response.status_code == 201, response.json()
    assert response.json()["ticket"]


def _typo(key: ServiceAccountKey, raw: str) -> str:
    return raw[:-1] + ("x" if raw[-1] != "x" else "y")


def _no_dot(key: ServiceAccountKey, raw: str) -> str:
    return raw.replace(".", "")


def _revoked(key: ServiceAccountKey, raw: str) -> str:
    service_account_key_revoke(key=key, actor=None)
    return raw


def _account_off(key: ServiceAccountKey, raw: str) -> str:
    ServiceAccount.objects.filter(pk=key.service_account_id).update(is_active=False)
    return raw


def _expired(key: ServiceAccountKey, raw: str) -> str:
    ServiceAccountKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - dt.timedelta(seconds=1))
    return raw


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_typo, "unknown_key"),
        (_no_dot, "malformed"),
        (_revoked, "revoked"),
        (_account_off, "account_inactive"),
        (_expired, "expired"),
    ],
)
def test_unusable_keys_are_refused_401_and_audited(party: WeddingParty, crm: ServiceAccount, spoil, reason) -> None:
    key, raw = service_account_key_issue(account=crm, name="prod", actor=None)
    response = with_key(spoil(key, raw)).get(alerts_url(party))
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    entry = AuditLog.objects.filter(action="api.auth.refuse").latest("pk")
    assert entry.details["reason"] == reason and entry.details["method"] == "api_key"
    assert entry.actor_id == (None if reason in ("unknown_key", "malformed") else crm.user_id)


def test_a_jwt_is_still_a_jwt(party: WeddingParty) -> None:
    from tests.presence.test_alerts_api import as_member

    response = as_member(APIClient(), party.priya).get(alerts_url(party))
    assert response.status_code == 200


def test_rotation_keeps_the_old_key_for_the_grace_period_only(
    party: WeddingParty, crm: ServiceAccount, settings
) -> None:
    settings.API_KEY_ROTATION_GRACE_SECONDS = 3600
    old, old_raw = service_account_key_issue(account=crm, name="prod", actor=None)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        fresh, fresh_raw = service_account_key_rotate(key=old, actor=None)
        assert fresh.name == "prod" and fresh.prefix != old.prefix
        assert with_key(old_raw).get(alerts_url(party)).status_code == 200
        clock.shift(dt.timedelta(seconds=3601))
        assert with_key(old_raw).get(alerts_url(party)).status_code == 401
        assert with_key(fresh_raw).get(alerts_url(party)).status_code == 200
    rotation = AuditLog.objects.get(action="api.key.rotate")
    assert rotation.details["replaced_by"] == fresh.prefix


def test_last_use_is_recorded_at_most_once_a_minute(party: WeddingParty, crm: ServiceAccount) -> None:
    key, raw = service_account_key_issue(account=crm, name="prod", actor=None)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        with_key(raw).get(alerts_url(party))
        assert ServiceAccountKey.objects.get(pk=key.pk).last_used_at == start
        clock.shift(dt.timedelta(seconds=30))
        with_key(raw).get(alerts_url(party))
        assert ServiceAccountKey.objects.get(pk=key.pk).last_used_at == start
        clock.shift(dt.timedelta(seconds=31))
        with_key(raw).get(alerts_url(party))
        assert ServiceAccountKey.objects.get(pk=key.pk).last_used_at == start + dt.timedelta(seconds=61)


def test_each_key_has_its_own_rate_limit(party: WeddingParty, crm: ServiceAccount, settings) -> None:
    settings.API_KEY_RATE = "3/min"
    _one, first = service_account_key_issue(account=crm, name="one", actor=None)
    _two, second = service_account_key_issue(account=crm, name="two", actor=None)
    answers = [with_key(first).get(alerts_url(party)).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    refused = with_key(first).get(alerts_url(party)).json()["error"]
    assert refused["code"] == "rate_limited" and refused["retry_after"] > 0
    assert with_key(second).get(alerts_url(party)).status_code == 200


def test_in_the_admin_a_superuser_creates_an_account_and_sees_its_key_once(party: WeddingParty) -> None:
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    response = client.post(
        reverse("admin:wedsync_serviceaccount_add"),
        {
            "name": "Venue system",
            "weddings": [party.wedding.pk],
            "scopes": ["read", "publish"],
            "is_active": "on",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "The new API key" in str(m)]
    assert len(shown) == 1
    raw = shown[0].split(" is: ")[1].split(" ")[0]
    account = ServiceAccount.objects.get(name="Venue system")
    assert (account.scopes, list(account.weddings.all())) == (["publish", "read"], [party.wedding])
    assert with_key(raw).get(alerts_url(party)).status_code == 200
    page = client.get(reverse("admin:wedsync_serviceaccount_change", args=[account.pk])).content.decode()
    assert raw.split(".")[0] in page and raw not in page  # the prefix only, ever after
    assert AuditLog.objects.filter(action="api.service_account.change", actor=admin, details__op="create").exists()


def test_coordinators_do_not_see_service_accounts(party: WeddingParty) -> None:
    from wedsync.services.agencies import agency_coordinator_add

    agency = Agency.objects.create(name="Luz Weddings")
    cora = UserFactory(username="cora")
    agency_coordinator_add(agency=agency, user=cora)
    client = Client()
    client.force_login(cora)
    assert client.get(reverse("admin:wedsync_serviceaccount_changelist")).status_code == 403


def test_every_api_view_checks_what_a_key_may_do() -> None:
    """A view that names its own permission classes must keep ApiKeyScopes among them, or a key
    could do there what its scopes do not allow."""
    from django.urls import URLPattern, URLResolver, get_resolver
    from rest_framework.permissions import AllowAny
    from rest_framework.views import APIView

    from wedsync.api.permissions import ApiKeyScopes

    def views(patterns: list) -> list[type[APIView]]:
        found = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found += views(pattern.url_patterns)
            elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls"):
                found.append(pattern.callback.cls)
        return found

    api_views = views(get_resolver().url_patterns)
    assert len(api_views) > 10
    unchecked = [
        view.__name__
        for view in api_views
        if AllowAny not in view.permission_classes and ApiKeyScopes not in view.permission_classes
    ]
    assert unchecked == []
