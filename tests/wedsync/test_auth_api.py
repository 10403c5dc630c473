"""Tokens: issue, refresh with rotation, expiry, forgeries, and revocation."""

from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest
import time_machine
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from tests.factories import PASSWORD
from tests.personas import WeddingParty
from wedsync.models import AuditLog, Member
from wedsync.permissions import Role
from wedsync.services.members import member_remove, member_save

pytestmark = pytest.mark.django_db

TOKEN_URL = reverse("token-obtain")
REFRESH_URL = reverse("token-refresh")
LOGOUT_URL = reverse("logout")
# Any endpoint behind authentication shows whether a token is accepted.
PROTECTED_URL = reverse("realtime-ticket")


@pytest.fixture
def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.4", HTTP_USER_AGENT="wedsync-tests/1.0")


def obtain(api: APIClient, member: Member) -> dict[str, object]:
    response = api.post(TOKEN_URL, {"username": member.user.username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def call_protected(api: APIClient, access: object) -> int:
    return api.post(PROTECTED_URL, HTTP_AUTHORIZATION=f"Bearer {access}").status_code


def test_password_grant_issues_a_short_lived_pair_and_audits_it(api: APIClient, party: WeddingParty) -> None:
    body = obtain(api, party.priya)
    assert set(body) == {"access", "refresh", "access_expires_in", "refresh_expires_in"}
    assert body["access_expires_in"] == 15 * 60
    claims = jwt.decode(str(body["access"]), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert claims["aud"] == "wedsync" and claims["token_type"] == "access"
    assert call_protected(api, body["access"]) == 201
    entry = AuditLog.objects.filter(action="auth.token.issue").get()
    assert (entry.actor_id, entry.outcome, entry.ip, entry.user_agent) == (
        party.priya.user_id,
        "success",
        "198.51.100.4",
        "wedsync-tests/1.0",
    )


def test_wrong_password_is_refused_and_audited(api: APIClient, party: WeddingParty) -> None:
    response = api.post(TOKEN_URL, {"username": party.priya.user.username, "password": "nope"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    entry = AuditLog.objects.get(action="auth.token.refuse")
    assert (entry.outcome, entry.actor_label, entry.details["reason"]) == (
        "refused",
        party.priya.user.username,
        "bad_credentials",
    )


def test_missing_fields_are_named(api: APIClient) -> None:
    response = api.post(TOKEN_URL, {"username": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "password" in response.json()["error"]["fields"]


def test_refresh_rotates_and_an_old_refresh_token_works_once(api: APIClient, party: WeddingParty) -> None:
    first = obtain(api, party.ana)
    rotated = api.post(REFRESH_URL, {"refresh": first["refresh"]}, format="json")
    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != first["refresh"]
    assert call_protected(api, rotated.json()["access"]) == 201
    replay = api.post(REFRESH_URL, {"refresh": first["refresh"]}, format="json")
    assert replay.status_code == 401
    assert AuditLog.objects.filter(action="auth.token.refuse", details__grant="refresh").count() == 1


def test_an_access_token_is_not_a_refresh_token(api: APIClient, party: WeddingParty) -> None:
    body = obtain(api, party.ana)
    assert api.post(REFRESH_URL, {"refresh": body["access"]}, format="json").status_code == 401
    assert call_protected(api, body["refresh"]) == 401


def test_access_token_expires_after_fifteen_minutes(api: APIClient, party: WeddingParty) -> None:
    with time_machine.travel(dt.datetime(2026, 6, 13, 14, 0, tzinfo=dt.UTC), tick=False) as traveller:
        access = obtain(api, party.paula)["access"]
        traveller.shift(dt.timedelta(minutes=14))
        assert call_protected(api, access) == 201
        traveller.shift(dt.timedelta(minutes=1, seconds=10))  # past expiry and the 5 s leeway
        assert call_protected(api, access) == 401
    assert AuditLog.objects.get(action="api.auth.refuse").details["reason"] == "expired"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(api: APIClient, party: WeddingParty) -> None:
    real = jwt.decode(str(obtain(api, party.priya)["access"]), options={"verify_signature": False})
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(real)}."
    assert call_protected(api, forged) == 401
    assert AuditLog.objects.get(action="api.auth.refuse").details["reason"] == "invalid"


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [("not-the-signing-key-" * 3, "HS256"), (settings.SECRET_KEY, "HS512")],
    ids=["wrong-key", "other-algorithm"],
)
def test_wrong_signature_or_algorithm_is_refused(api: APIClient, party: WeddingParty, key: str, algorithm: str) -> None:
    claims = jwt.decode(str(obtain(api, party.priya)["access"]), options={"verify_signature": False})
    assert call_protected(api, jwt.encode(claims, key, algorithm=algorithm)) == 401


def test_wrong_audience_is_refused(api: APIClient, party: WeddingParty) -> None:
    claims = jwt.decode(str(obtain(api, party.priya)["access"]), options={"verify_signature": False})
    claims["aud"] = "someone-else"
    assert call_protected(api, jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")) == 401


def test_well_signed_token_without_generation_is_refused(api: APIClient, party: WeddingParty) -> None:
    claims = jwt.decode(str(obtain(api, party.priya)["access"]), options={"verify_signature": False})
    del claims["gen"]
    assert call_protected(api, jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")) == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer \u00e9t\u00e9"])
def test_malformed_authorization_header_is_refused(api: APIClient, header: str) -> None:
    response = api.post(PROTECTED_URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_role_change_revokes_outstanding_tokens(api: APIClient, party: WeddingParty) -> None:
    tokens = obtain(api, party.paula)
    party.paula.role = Role.GUEST.value
    party.paula.vendor_company = ""
    result = member_save(member=party.paula, actor=party.priya.user)
    assert result.tokens_revoked and result.changed["role"] == ("photographer", "guest")
    assert call_protected(api, tokens["access"]) == 401
    assert api.post(REFRESH_URL, {"refresh": tokens["refresh"]}, format="json").status_code == 401
    assert AuditLog.objects.get(action="api.auth.refuse").details["reason"] == "revoked"
    # The user logs in again and gets tokens that work.
    assert call_protected(api, obtain(api, party.paula)["access"]) == 201


def test_unrelated_member_edit_keeps_tokens(api: APIClient, party: WeddingParty) -> None:
    tokens = obtain(api, party.paula)
    party.paula.vendor_contact = "+351 900 000 000"
    assert not member_save(member=party.paula, actor=party.priya.user).tokens_revoked
    assert call_protected(api, tokens["access"]) == 201


def test_deactivating_or_removing_a_member_revokes_tokens(api: APIClient, party: WeddingParty) -> None:
    carmen_tokens, gil_tokens = obtain(api, party.carmen), obtain(api, party.gil)
    party.carmen.is_active = False
    member_save(member=party.carmen, actor=party.priya.user)
    member_remove(member=party.gil, actor=party.priya.user)
    assert call_protected(api, carmen_tokens["access"]) == 401
    assert call_protected(api, gil_tokens["access"]) == 401


def test_role_change_in_the_admin_revokes_tokens(api: APIClient, party: WeddingParty, admin_client) -> None:
    tokens = obtain(api, party.gil)
    url = reverse("admin:wedsync_member_change", args=[party.gil.pk])
    form = {
        "user": party.gil.user_id,
        "wedding": party.wedding.pk,
        "role": "couple",
        "display_name": "",
        "vendor_company": "",
        "vendor_contact": "",
        "is_active": "on",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content[:2000]
    assert Member.objects.get(pk=party.gil.pk).role == "couple"
    assert call_protected(api, tokens["access"]) == 401
    assert AuditLog.objects.filter(action="member.change", target=f"member:{party.gil.pk}").exists()


def test_logout_revokes_every_token_of_the_user(api: APIClient, party: WeddingParty) -> None:
    phone, laptop = obtain(api, party.ana), obtain(api, party.ana)
    response = api.post(
        LOGOUT_URL, {"refresh": phone["refresh"]}, format="json", HTTP_AUTHORIZATION=f"Bearer {phone['access']}"
    )
    assert response.status_code == 204
    for tokens in (phone, laptop):
        assert call_protected(api, tokens["access"]) == 401
        assert api.post(REFRESH_URL, {"refresh": tokens["refresh"]}, format="json").status_code == 401
    assert AuditLog.objects.filter(action="auth.logout", actor=party.ana.user).count() == 1


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_racing_refreshes_with_one_token_rotate_it_once(party: WeddingParty) -> None:
    from tests.concurrency import race
    from wedsync.services.audit import ClientInfo
    from wedsync.services.auth import TokenRefused, token_pair_obtain, token_pair_refresh

    client = ClientInfo(ip="127.0.0.1", user_agent="race")
    refresh = token_pair_obtain(username=party.ana.user.username, password=PASSWORD, client=client).refresh
    results = race(lambda: token_pair_refresh(refresh=refresh, client=client), threads=6, expected=(TokenRefused,))
    outcomes = [result.reason if isinstance(result, TokenRefused) else "rotated" for result in results]
    assert outcomes.count("rotated") == 1
    assert len(outcomes) == 6


def test_a_request_without_credentials_is_audited(api: APIClient) -> None:
    assert api.post(PROTECTED_URL).status_code == 401
    entry = AuditLog.objects.get(action="api.refuse")
    assert (entry.outcome, entry.target, entry.details["status"]) == ("refused", f"POST {PROTECTED_URL}", 401)


def test_a_revoked_token_refusal_names_the_user(api: APIClient, party: WeddingParty) -> None:
    access = obtain(api, party.olu)["access"]
    from wedsync.services.auth import tokens_revoke_for_user

    tokens_revoke_for_user(user_id=party.olu.user_id, reason="test")
    assert call_protected(api, access) == 401
    assert AuditLog.objects.get(action="api.auth.refuse").actor_id == party.olu.user_id


def test_deleting_a_wedding_revokes_its_members_tokens(api: APIClient, party: WeddingParty) -> None:
    from wedsync.services.weddings import wedding_delete

    access = obtain(api, party.gil)["access"]
    wedding_delete(wedding=party.wedding, actor=None)
    assert call_protected(api, access) == 401
    assert AuditLog.objects.filter(action="wedding.delete").count() == 1
