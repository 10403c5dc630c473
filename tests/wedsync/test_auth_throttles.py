"""The token endpoints' throttles: login and refresh each per address and per user, exact across
concurrent attempts, and a 429 that says when to come back."""

from __future__ import annotations

import jwt
import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from tests.concurrency import race
from tests.factories import PASSWORD
from tests.personas import WeddingParty
from tests.servers import redis_server
from wedsync.services.throttles import auth_attempt_hit

pytestmark = [pytest.mark.django_db, pytest.mark.requires_redis]

TOKEN_URL = reverse("token-obtain")
REFRESH_URL = reverse("token-refresh")


def from_address(address: str) -> APIClient:
    return APIClient(REMOTE_ADDR=address)


def login(api: APIClient, username: str, password: str = "wrong") -> int:  # noqa: S107
    return api.post(TOKEN_URL, {"username": username, "password": password}, format="json").status_code


def refresh(api: APIClient, token: str) -> int:
    return api.post(REFRESH_URL, {"refresh": token}, format="json").status_code


@override_settings(API_LOGIN_ADDRESS_RATE="3/min")
def test_logins_are_throttled_per_address_and_the_429_says_when_to_retry() -> None:
    api = from_address("198.51.100.4")
    assert [login(api, f"someone{i}") for i in range(3)] == [401, 401, 401]
    response = api.post(TOKEN_URL, {"username": "someone-else", "password": "x"}, format="json")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert isinstance(error["retry_after"], int) and 1 <= error["retry_after"] <= 60
    assert response["Retry-After"] == str(error["retry_after"])
    assert login(from_address("198.51.100.5"), "someone0") == 401  # another address has its own bucket


@override_settings(API_LOGIN_USER_RATE="3/min")
def test_logins_are_throttled_per_username_whatever_the_address(party: WeddingParty) -> None:
    username = party.ana.user.username
    assert [login(from_address(f"203.0.113.{i}"), username) for i in range(3)] == [401, 401, 401]
    # A fourth address, and even the right password: the account's bucket is spent.
    assert login(from_address("203.0.113.99"), username, PASSWORD) == 429
    assert login(from_address("203.0.113.99"), party.ben.user.username, PASSWORD) == 200


@override_settings(API_LOGIN_ADDRESS_RATE="2/min")
def test_spent_logins_do_not_stop_refreshes(party: WeddingParty) -> None:
    api = from_address("198.51.100.4")
    pair = api.post(TOKEN_URL, {"username": party.ana.user.username, "password": PASSWORD}, format="json").json()
    assert login(api, "nobody") == 401
    assert login(api, "nobody") == 429
    assert refresh(api, pair["refresh"]) == 200


@override_settings(API_REFRESH_USER_RATE="3/min")
def test_refreshes_are_throttled_per_token_user_whatever_the_address(party: WeddingParty) -> None:
    pair = from_address("198.51.100.4").post(
        TOKEN_URL, {"username": party.ana.user.username, "password": PASSWORD}, format="json"
    )
    token = pair.json()["refresh"]
    # Rotated once, then refused as reused: every try counts against Ana's bucket.
    assert [refresh(from_address(f"203.0.113.{i}"), token) for i in range(3)] == [200, 401, 401]
    assert refresh(from_address("203.0.113.50"), token) == 429


@override_settings(API_REFRESH_USER_RATE="2/min", API_REFRESH_ADDRESS_RATE="100/min")
def test_a_forged_refresh_token_cannot_spend_its_named_users_bucket(party: WeddingParty) -> None:
    claims = {"token_type": "refresh", "user_id": str(party.ana.user_id), "jti": "x", "aud": "wedsync"}
    forged = jwt.encode({**claims, "iss": "wedsync", "exp": 4102444800}, "not-our-key-" * 4, algorithm="HS256")
    attacker = from_address("198.51.100.66")
    assert [refresh(attacker, forged) for _ in range(5)] == [401] * 5
    pair = from_address("198.51.100.4").post(
        TOKEN_URL, {"username": party.ana.user.username, "password": PASSWORD}, format="json"
    )
    assert refresh(from_address("198.51.100.4"), pair.json()["refresh"]) == 200


@override_settings(TRUSTED_PROXIES=0, API_LOGIN_ADDRESS_RATE="3/min")
def test_a_forged_forwarded_for_does_not_open_a_new_address_bucket() -> None:
    api = from_address("198.51.100.4")
    statuses = [
        api.post(
            TOKEN_URL, {"username": f"u{i}", "password": "x"}, format="json", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}"
        ).status_code
        for i in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


@pytest.mark.django_db(transaction=True)
def test_concurrent_attempts_are_counted_exactly() -> None:
    # Twelve attempts at once on a budget of five: exactly five pass (a read-then-write count,
    # like DRF's cache throttles, lets several read the same history and all pass).
    results = race(lambda: auth_attempt_hit(bucket="test.race", identity="one", rate="5/min"), threads=12)
    assert sum(result is None for result in results) == 5
    assert all(isinstance(result, int) and result > 0 for result in results if result is not None)


def test_the_rates_are_settings_with_documented_defaults() -> None:
    assert (
        settings.API_LOGIN_ADDRESS_RATE,
        settings.API_LOGIN_USER_RATE,
        settings.API_REFRESH_ADDRESS_RATE,
        settings.API_REFRESH_USER_RATE,
    ) == ("60/min", "10/min", "120/min", "30/min")


def test_sign_ins_go_through_while_redis_is_away() -> None:
    with redis_server() as server:
        url = server.url
    with override_settings(REDIS_URL=url):  # stopped: every count fails
        assert [auth_attempt_hit(bucket="test.away", identity="one", rate="1/min") for _ in range(3)] == [None] * 3
