"""A wedding's members over the staff API (issue 20): listed by who may see the wedding; invited by
e-mail, changed and removed by its planner, couple, overseeing staff or a key with `members`;
every change audited, and a live socket of a changed member told at once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.personas import WeddingParty, make_coordinator, make_wedding_party
from tests.presence.test_alerts_api import as_user
from wedsync.models import AuditLog, Member
from wedsync.services.service_accounts import service_account_create, service_account_key_issue

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")


def members_url(party: WeddingParty) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/members/"


def member_url(member: Member) -> str:
    return f"/api/v1/weddings/{member.wedding_id}/members/{member.pk}/"


INVITE = {"email": "dj@example.com", "first_name": "Dee", "last_name": "Jay", "role": "musician"}


def test_the_wedding_sees_its_members_and_nobody_else_does(party: WeddingParty) -> None:
    listed = as_user(api(), party.gil.user).get(members_url(party))
    assert listed.status_code == 200
    assert {m["id"] for m in listed.json()} == {m.pk for m in party.members}
    assert all("email" not in m and "vendor_contact" not in m for m in listed.json())  # a guest's view
    managed = as_user(api(), party.priya.user).get(members_url(party)).json()
    assert {m["email"] for m in managed} == {m.user.email for m in party.members}
    stranger = as_user(api(), make_wedding_party().gil.user).get(members_url(party))
    assert stranger.status_code == 403


def test_the_planner_invites_a_newcomer_once_however_often_it_is_retried(party: WeddingParty) -> None:
    client = as_user(api(), party.priya.user)
    first = client.post(members_url(party), INVITE, format="json", HTTP_IDEMPOTENCY_KEY="dj")
    assert first.status_code == 201, first.json()
    assert (first.json()["name"], first.json()["role"], first.json()["email"]) == (
        "Dee Jay",
        "musician",
        INVITE["email"],
    )
    again = client.post(members_url(party), INVITE, format="json", HTTP_IDEMPOTENCY_KEY="dj")
    assert again.status_code == 201 and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    newcomer = User.objects.get(email="dj@example.com")
    assert not newcomer.has_usable_password()
    twice = client.post(members_url(party), INVITE, format="json", HTTP_IDEMPOTENCY_KEY="dj-again")
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "conflict"
    entry = AuditLog.objects.get(action="member.add", target=f"member:{first.json()['id']}")
    assert entry.actor_id == party.priya.user_id


def test_other_members_may_not_manage_and_are_audited(party: WeddingParty) -> None:
    for member in (party.paula, party.gil):
        answer = as_user(api(), member.user).post(members_url(party), INVITE, format="json", HTTP_IDEMPOTENCY_KEY="x")
        assert answer.status_code == 403
    assert AuditLog.objects.filter(action="api.refuse", details__op="manage members").count() == 2
    assert not User.objects.filter(email="dj@example.com").exists()


def test_a_non_vendor_with_vendor_details_is_invalid(party: WeddingParty) -> None:
    body = {**INVITE, "role": "guest", "vendor_company": "Beats Ltd"}
    answer = as_user(api(), party.priya.user).post(members_url(party), body, format="json", HTTP_IDEMPOTENCY_KEY="v")
    assert answer.status_code == 422 and "vendor_company" in answer.json()["error"]["fields"]
    assert not Member.objects.filter(wedding=party.wedding, user__email="dj@example.com").exists()


def test_a_coordinator_changes_a_role_and_the_member_loses_their_tokens(party: WeddingParty) -> None:
    cora = make_coordinator(party.wedding)
    changed = as_user(api(), cora).patch(member_url(party.paula), {"role": "videographer"}, format="json")
    assert changed.status_code == 200 and changed.json()["role"] == "videographer"
    entry = AuditLog.objects.get(action="member.change", target=f"member:{party.paula.pk}")
    assert entry.actor_id == cora.pk and entry.details["role"] == ["photographer", "videographer"]
    assert AuditLog.objects.filter(action="auth.tokens.revoke", details__reason="member_changed").exists()


def test_a_key_with_the_members_scope_removes_a_member(party: WeddingParty) -> None:
    account = service_account_create(name="CRM", scopes=["read", "members"], weddings=[party.wedding], actor=None)
    _key, raw = service_account_key_issue(account=account, name="prod", actor=None)
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert client.delete(member_url(party.miles)).status_code == 204
    assert not Member.objects.filter(pk=party.miles.pk).exists()
    assert AuditLog.objects.filter(action="member.remove", actor=account.user).exists()
    elsewhere = make_wedding_party()
    assert client.delete(member_url(elsewhere.miles)).status_code == 403
    assert client.delete(f"/api/v1/weddings/{party.wedding.pk}/members/987654/").status_code == 404


def test_a_key_without_the_members_scope_is_refused(party: WeddingParty) -> None:
    account = service_account_create(name="Reader", scopes=["read"], weddings=[party.wedding], actor=None)
    _key, raw = service_account_key_issue(account=account, name="prod", actor=None)
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert client.get(members_url(party)).status_code == 200
    refused = client.patch(member_url(party.miles), {"is_key_person": True}, format="json")
    assert refused.status_code == 403 and "'members' scope" in refused.json()["error"]["message"]


def test_staff_and_closed_accounts_cannot_be_pulled_into_a_wedding(party: WeddingParty) -> None:
    cora = make_coordinator(make_wedding_party().wedding)
    User.objects.filter(pk=cora.pk).update(email="cora@agency.example")
    body = {**INVITE, "email": "cora@agency.example"}
    answer = as_user(api(), party.priya.user).post(members_url(party), body, format="json", HTTP_IDEMPOTENCY_KEY="c")
    assert answer.status_code == 409 and "cora" not in answer.json()["error"]["message"]
    assert not Member.objects.filter(wedding=party.wedding, user=cora).exists()


def test_a_newcomer_without_a_name_is_not_shown_by_their_address(party: WeddingParty) -> None:
    body = {"email": "quiet@example.com", "role": "musician"}
    made = as_user(api(), party.priya.user).post(members_url(party), body, format="json", HTTP_IDEMPOTENCY_KEY="q")
    assert made.status_code == 201
    seen = as_user(api(), party.gil.user).get(members_url(party)).json()
    assert "quiet@example.com" not in str(seen)
