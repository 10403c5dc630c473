"""Deactivating a user, changing or resetting a password and an admin's "log out everywhere" revoke
every token and browser session issued before (issue 16, item 3). The sockets' side is
tests/realtime/test_revocation.py."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from tests.factories import PASSWORD, UserFactory
from tests.personas import WeddingParty
from wedsync.models import AuditLog
from wedsync.selectors import token_generation_current

pytestmark = pytest.mark.django_db

TOKEN_URL, REFRESH_URL, PROTECTED_URL = reverse("token-obtain"), reverse("token-refresh"), reverse("realtime-ticket")


def obtain(user: User) -> dict[str, str]:
    response = APIClient().post(TOKEN_URL, {"username": user.username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def accepted(access: str) -> bool:
    return APIClient().post(PROTECTED_URL, HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 201


def refreshed(refresh: str) -> bool:
    return APIClient().post(REFRESH_URL, {"refresh": refresh}, format="json").status_code == 200


def revocations(user: User) -> list[str]:
    rows = AuditLog.objects.filter(action="auth.tokens.revoke", target=f"user:{user.pk}")
    return [row.details["reason"] for row in rows]


def test_a_password_change_revokes_access_and_refresh_tokens(party: WeddingParty) -> None:
    user = party.priya.user
    pair = obtain(user)
    user.set_password("a new and long enough password")
    user.save()
    assert not accepted(pair["access"])
    assert not refreshed(pair["refresh"])  # issued before the change: refused
    assert revocations(user) == ["password_changed"]


def test_a_password_reset_through_the_admin_form_revokes_too(party: WeddingParty, admin_client: Client) -> None:
    user = party.ana.user
    pair = obtain(user)
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": "another long passphrase 42", "password2": "another long passphrase 42"},
    )
    assert response.status_code == 302, response.content
    assert not accepted(pair["access"]) and not refreshed(pair["refresh"])


def test_deactivating_a_user_revokes_and_reactivating_does_not(party: WeddingParty) -> None:
    user = party.gil.user
    pair = obtain(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert token_generation_current(user_id=user.pk) == 1
    user.is_active = True
    user.save()
    assert token_generation_current(user_id=user.pk) == 1
    assert not accepted(pair["access"])
    assert revocations(user) == ["deactivated"]


def test_saves_that_change_neither_revoke_nothing(party: WeddingParty) -> None:
    user = party.paula.user
    pair = obtain(user)  # a login saves last_login
    user.first_name = "Paula"
    user.save()
    assert accepted(pair["access"]) and token_generation_current(user_id=user.pk) == 0


def test_a_stored_hash_upgraded_at_login_revokes_nothing(party: WeddingParty) -> None:
    user = party.victor.user  # stored with MD5 (the tests' hasher)
    pair = obtain(user)
    with override_settings(
        PASSWORD_HASHERS=[
            "django.contrib.auth.hashers.PBKDF2PasswordHasher",
            "django.contrib.auth.hashers.MD5PasswordHasher",
        ]
    ):
        assert user.check_password(PASSWORD)  # re-hashed with PBKDF2 and saved
        user.refresh_from_db()
        assert user.password.startswith("pbkdf2_sha256$")
    assert accepted(pair["access"]) and token_generation_current(user_id=user.pk) == 0


def test_a_first_password_revokes_nothing() -> None:
    user = UserFactory()  # created without a usable password, then given one
    assert token_generation_current(user_id=user.pk) == 0 and revocations(user) == []


def test_the_admin_logs_a_user_out_everywhere(party: WeddingParty, admin_client: Client, admin_user: User) -> None:
    user = party.ben.user
    pair = obtain(user)
    browser = Client()
    assert browser.login(username=user.username, password=PASSWORD)
    assert browser.post(PROTECTED_URL).status_code == 201  # the session works
    response = admin_client.post(
        reverse("admin:auth_user_changelist"), {"action": "log_out_everywhere", "_selected_action": [user.pk]}
    )
    assert response.status_code == 302
    assert not accepted(pair["access"]) and not refreshed(pair["refresh"])
    assert browser.post(PROTECTED_URL).status_code in (401, 403)  # the session was logged out
    entry = AuditLog.objects.get(action="auth.tokens.revoke", target=f"user:{user.pk}")
    assert (entry.actor_id, entry.details["reason"]) == (admin_user.pk, "admin_logout")


def test_a_browser_session_ends_with_a_password_change_made_elsewhere(party: WeddingParty) -> None:
    user = party.olu.user
    browser = Client()
    assert browser.login(username=user.username, password=PASSWORD)
    obtain(user)
    # Revoked through the token API (logout everywhere from a phone): the browser follows.
    APIClient().post(reverse("logout"), HTTP_AUTHORIZATION=f"Bearer {obtain(user)['access']}")
    assert browser.post(PROTECTED_URL).status_code in (401, 403)


def test_disabling_a_password_revokes(party: WeddingParty) -> None:
    user = party.miles.user
    pair = obtain(user)
    user.set_unusable_password()  # the admin's "Password-based authentication: disabled"
    user.save()
    assert not accepted(pair["access"]) and not refreshed(pair["refresh"])
    assert revocations(user) == ["password_disabled"]


def test_a_session_cookie_with_a_nul_is_no_session(party: WeddingParty) -> None:
    browser = Client()
    browser.cookies["sessionid"] = "abcdefgh\x00ijk"
    assert browser.post(PROTECTED_URL).status_code in (401, 403)  # not a server error


def test_a_body_nested_too_deep_is_bad_json_not_a_server_error() -> None:
    response = APIClient().post(TOKEN_URL, "[" * 5000, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_json"
