"""The admin's sign-in: failures audited, locked out per username and per address (django-axes,
counters in Redis), a clear 429 page, attempts while locked not flooding the audit log."""

from __future__ import annotations

import datetime as dt
import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings
from rest_framework.test import APIClient

from monitoring.metrics import ADMIN_LOGIN_REFUSALS
from tests.factories import PASSWORD, UserFactory
from wedsync.models import AuditLog
from wedsync.services.audit import audit_refusals_flush

pytestmark = [pytest.mark.django_db, pytest.mark.requires_redis]

LOGIN_URL = "/admin/login/"


@pytest.fixture
def coordinator() -> User:
    user: User = UserFactory(username="coordinator", is_staff=True)
    return user


def sign_in(
    username: str, password: str, *, address: str = "198.51.100.4", forwarded_for: str | None = None
) -> tuple[int, Client]:
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    browser = Client(REMOTE_ADDR=address, **headers)  # type: ignore[arg-type]
    response = browser.post(LOGIN_URL, {"username": username, "password": password, "next": "/admin/"})
    return response.status_code, browser


def signed_in(browser: Client) -> bool:
    return browser.get("/admin/").status_code == 200


def rows(action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action).order_by("id"))


def test_a_failed_sign_in_is_audited_with_its_count(coordinator: User) -> None:
    status, _ = sign_in("coordinator", "wrong")
    assert status == 200  # the form again, with Django's error
    [row] = rows("admin.login.refuse")
    assert (row.outcome, row.actor_label, row.ip) == ("refused", "coordinator", "198.51.100.4")
    details = {key: row.details[key] for key in ("reason", "failures", "limit", "count")}
    assert details == {
        "reason": "bad_credentials",
        "failures": 1,
        "limit": settings.ADMIN_LOGIN_FAILURE_LIMIT,
        "count": 1,
    }


def test_a_successful_sign_in_is_audited(coordinator: User) -> None:
    status, browser = sign_in("coordinator", PASSWORD)
    assert status == 302 and signed_in(browser)
    assert [row.actor_id for row in rows("admin.login")] == [coordinator.pk]


def test_failures_for_one_username_lock_it_out_from_every_address(coordinator: User) -> None:
    limit = settings.ADMIN_LOGIN_FAILURE_LIMIT
    for i in range(limit):
        sign_in("coordinator", f"guess{i}", address=f"203.0.113.{i}")
    status, browser = sign_in("coordinator", PASSWORD, address="192.0.2.1")
    assert status == 429 and not signed_in(browser)
    response = Client(REMOTE_ADDR="192.0.2.2").post(LOGIN_URL, {"username": "coordinator", "password": PASSWORD})
    assert response.status_code == 429
    assert response["Retry-After"] == str(settings.ADMIN_LOGIN_COOLOFF_SECONDS)
    assert b"Too many failed sign-ins" in response.content and b"15 minutes" in response.content
    [lockout] = rows("admin.login.lockout")
    assert (lockout.actor_label, lockout.ip, lockout.details["failures"]) == (
        "coordinator",
        f"203.0.113.{limit - 1}",
        limit,
    )


def test_failures_from_one_address_lock_it_out_for_every_username(coordinator: User) -> None:
    for i in range(settings.ADMIN_LOGIN_FAILURE_LIMIT):
        sign_in(f"admin{i}", "password1", address="198.51.100.66")
    status, browser = sign_in("coordinator", PASSWORD, address="198.51.100.66")
    assert status == 429 and not signed_in(browser)
    status, browser = sign_in("coordinator", PASSWORD, address="198.51.100.67")  # the account itself is fine
    assert status == 302 and signed_in(browser)


def test_hammering_a_locked_form_is_counted_not_written_row_by_row(coordinator: User) -> None:
    # Failed sign-ins are refusals of nobody identified (decision 0025): per address and reason,
    # the first of a window is a row, the rest one row with their count once the window closes.
    limit = settings.ADMIN_LOGIN_FAILURE_LIMIT
    counted_before = ADMIN_LOGIN_REFUSALS.labels(reason="locked_out")._value.get()
    with time_machine.travel(dt.datetime(2026, 6, 13, 15, 0, tzinfo=dt.UTC), tick=False) as clock:
        for i in range(limit):
            sign_in("coordinator", f"guess{i}")
        statuses = [sign_in("coordinator", f"more{i}")[0] for i in range(20)]
        assert statuses == [429] * 20
        assert [row.details["reason"] for row in rows("admin.login.refuse")] == ["bad_credentials", "locked_out"]
        assert len(rows("admin.login.lockout")) == 1
        clock.move_to(dt.datetime(2026, 6, 13, 15, 1, 3, tzinfo=dt.UTC))
        audit_refusals_flush()
    assert ADMIN_LOGIN_REFUSALS.labels(reason="locked_out")._value.get() - counted_before == 20
    counts: dict[str, int] = {}
    for row in rows("admin.login.refuse"):
        counts[row.details["reason"]] = counts.get(row.details["reason"], 0) + row.details["count"]
    assert counts == {"bad_credentials": limit, "locked_out": 20}  # every attempt accounted for
    assert len(rows("admin.login.refuse")) == 4


@override_settings(ADMIN_LOGIN_COOLOFF_SECONDS=2, AXES_COOLOFF_TIME=timedelta(seconds=2))
def test_the_lockout_ends_after_the_cool_off(coordinator: User) -> None:
    for i in range(settings.ADMIN_LOGIN_FAILURE_LIMIT):
        sign_in("coordinator", f"guess{i}")
    assert sign_in("coordinator", PASSWORD)[0] == 429
    time.sleep(2.5)  # the counters are Redis keys that expire with the cool-off
    status, browser = sign_in("coordinator", PASSWORD)
    assert status == 302 and signed_in(browser)


@override_settings(TRUSTED_PROXIES=1)
def test_behind_a_proxy_the_lockout_and_the_audit_use_the_client_address(coordinator: User) -> None:
    for i in range(settings.ADMIN_LOGIN_FAILURE_LIMIT):
        sign_in(f"admin{i}", "x", address="10.0.0.1", forwarded_for="203.0.113.9")
    assert {row.ip for row in rows("admin.login.refuse")} == {"203.0.113.9"}
    # Another client behind the same proxy is not locked out by that one.
    status, browser = sign_in("coordinator", PASSWORD, address="10.0.0.1", forwarded_for="203.0.113.10")
    assert status == 302 and signed_in(browser)


def test_api_logins_neither_count_towards_nor_answer_with_the_admin_lockout(coordinator: User) -> None:
    api = APIClient(REMOTE_ADDR="198.51.100.4")
    for _ in range(settings.ADMIN_LOGIN_FAILURE_LIMIT + 1):
        response = api.post("/api/v1/auth/token/", {"username": "coordinator", "password": "x"}, format="json")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert rows("admin.login.refuse") == []
    status, browser = sign_in("coordinator", PASSWORD)
    assert status == 302 and signed_in(browser)


def test_an_operator_can_lift_a_lockout_early(coordinator: User) -> None:
    from django.core.management import call_command

    for i in range(settings.ADMIN_LOGIN_FAILURE_LIMIT):
        sign_in("coordinator", f"guess{i}", address=f"203.0.113.{i}")
    assert sign_in("coordinator", PASSWORD, address="192.0.2.1")[0] == 429
    call_command("axes_reset_username", "coordinator")  # docs/operations.md
    status, browser = sign_in("coordinator", PASSWORD, address="192.0.2.1")
    assert status == 302 and signed_in(browser)
