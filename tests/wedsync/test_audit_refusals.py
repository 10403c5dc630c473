"""Unauthenticated refusals do not grow the audit log without bound (issue 16 item 5, decision 0025):
per address, action and reason, the first of a window is one row and the rest one more row with
their count, written once the window closes; a known user's refusals stay one row each. And the
API answers 429 to an address past its budget of requests without valid credentials."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest
import time_machine
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from tests.concurrency import race
from tests.personas import WeddingParty
from wedsync.models import AuditLog
from wedsync.services.audit import AuditAction, ClientInfo, audit_refusal_record, audit_refusals_flush
from wedsync.services.auth import access_token_issue
from wedsync.tasks import flush_audit_refusals

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis]

T0 = dt.datetime(2026, 6, 13, 15, 0, tzinfo=dt.UTC)  # a window's start (windows are aligned to the minute)
WINDOW = dt.timedelta(seconds=60)
AFTER_WINDOW = WINDOW + dt.timedelta(seconds=3)  # past the window and the flush's grace for clock skew
PROTECTED_URL = reverse("realtime-ticket")
ATTACKER = "203.0.113.66"


def refuse(address: str | None, reason: str = "invalid", action: AuditAction = AuditAction.SOCKET_REFUSE) -> None:
    audit_refusal_record(action=action, reason=reason, client=ClientInfo(ip=address, user_agent="flood/1.0"))


def rows(action: str = "realtime.connect.refuse") -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action).order_by("id"))


def total(entries: list[AuditLog]) -> int:
    return sum(entry.details["count"] for entry in entries)


@pytest.fixture
def at_t0() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as clock:
        yield clock


@pytest.mark.django_db
def test_a_flood_is_one_row_at_once_and_one_row_with_the_count_after_the_window(at_t0) -> None:
    for _ in range(500):
        refuse(ATTACKER)
    for _ in range(3):
        refuse(ATTACKER, reason="expired")
    refuse("198.51.100.7")
    first = rows()
    assert [(e.ip, e.details["reason"], e.details["count"]) for e in first] == [
        (ATTACKER, "invalid", 1),
        (ATTACKER, "expired", 1),
        ("198.51.100.7", "invalid", 1),
    ]
    assert first[0].details["window_start"] == "2026-06-13T15:00:00Z"
    assert first[0].details["window_end"] == "2026-06-13T15:01:00Z"
    assert first[0].user_agent == "flood/1.0"
    assert audit_refusals_flush() == 0  # the window is still open
    at_t0.move_to(T0 + AFTER_WINDOW)
    assert audit_refusals_flush() == 2  # one per (address, reason) that counted more than its first
    assert audit_refusals_flush() == 0  # written once
    summaries = [e for e in rows() if e.details.get("aggregated")]
    assert sorted((e.ip, e.details["reason"], e.details["count"]) for e in summaries) == [
        (ATTACKER, "expired", 2),
        (ATTACKER, "invalid", 499),
    ]
    assert {(e.outcome, e.actor_id, e.details["window_start"]) for e in summaries} == {
        ("refused", None, "2026-06-13T15:00:00Z")
    }
    assert total(rows()) == 504


@pytest.mark.django_db(transaction=True)  # as a socket's thread and the API refuse: in no transaction
def test_the_first_refusal_of_the_next_window_writes_the_last_windows_count(at_t0) -> None:
    for _ in range(10):
        refuse(ATTACKER)
    at_t0.move_to(T0 + AFTER_WINDOW)
    refuse(ATTACKER)  # no beat needed: this one flushes the closed window and opens the next
    assert [(e.details["count"], bool(e.details.get("aggregated"))) for e in rows()] == [
        (1, False),
        (9, True),
        (1, False),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_refusal_inside_a_callers_transaction_leaves_the_closed_windows_to_beat(at_t0) -> None:
    for _ in range(4):
        refuse(ATTACKER)
    at_t0.move_to(T0 + AFTER_WINDOW)

    def work_that_fails() -> None:
        with transaction.atomic():
            refuse(ATTACKER, reason="expired")
            raise RuntimeError("the caller's work fails and rolls back")

    with pytest.raises(RuntimeError):
        work_that_fails()
    assert audit_refusals_flush() == 1  # the closed window was not taken into the rolled-back work
    assert [e.details["count"] for e in rows()] == [1, 3]


@pytest.mark.django_db
def test_beat_writes_the_closed_windows_every_window(at_t0) -> None:
    schedule = settings.CELERY_BEAT_SCHEDULE["wedsync-flush-audit-refusals"]
    assert (schedule["task"], schedule["schedule"]) == ("wedsync.tasks.flush_audit_refusals", 60.0)
    for _ in range(3):
        refuse(ATTACKER)
    at_t0.move_to(T0 + AFTER_WINDOW)
    assert flush_audit_refusals.apply().get() == 1  # the task as a worker runs it
    assert [e.details["count"] for e in rows()] == [1, 2]


@pytest.mark.django_db
def test_a_known_users_refusals_are_one_row_each(party: WeddingParty, at_t0) -> None:
    for _ in range(5):
        audit_refusal_record(
            action=AuditAction.API_AUTH_REFUSE,
            reason="revoked",
            actor=party.olu.user,
            client=ClientInfo(ip=ATTACKER, user_agent=""),
        )
    entries = rows("api.auth.refuse")
    assert len(entries) == 5
    assert {(e.actor_id, e.details["reason"]) for e in entries} == {(party.olu.user_id, "revoked")}


@pytest.mark.django_db
def test_without_redis_every_refusal_is_its_own_row(at_t0) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):  # nothing listens there
        for _ in range(3):
            refuse(ATTACKER)
    assert [e.details for e in rows()] == [{"reason": "invalid"}] * 3


@pytest.mark.django_db(transaction=True)
def test_flushers_racing_write_each_window_once() -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for n in range(40):
            for _ in range(3):
                refuse(f"192.0.2.{n}")
        clock.move_to(T0 + AFTER_WINDOW)
        written = race(audit_refusals_flush, threads=4)
    assert sum(n for n in written if isinstance(n, int)) == 40
    assert len([e for e in rows() if e.details.get("aggregated")]) == 40
    assert total(rows()) == 120


@pytest.mark.django_db(transaction=True)
def test_a_database_error_while_writing_puts_the_counts_back_for_the_next_flush() -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(7):
            refuse(ATTACKER)
        clock.move_to(T0 + AFTER_WINDOW)
        db = connection.settings_dict
        holder = psycopg.connect(
            host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
        )
        try:
            # Another session holds the table: the INSERT cannot finish before its timeout.
            holder.execute(f"LOCK TABLE {AuditLog._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = 300")
            with pytest.raises(OperationalError):
                audit_refusals_flush()
        finally:
            holder.rollback()
            holder.close()
            with connection.cursor() as cursor:
                cursor.execute("RESET statement_timeout")
        assert audit_refusals_flush() == 1
    assert [e.details["count"] for e in rows()] == [1, 6]


# --- The API ----------------------------------------------------------------------------------------


@pytest.fixture
def api() -> APIClient:
    return APIClient(REMOTE_ADDR=ATTACKER, HTTP_USER_AGENT="flood/1.0")


@pytest.mark.django_db
@override_settings(API_UNAUTHENTICATED_RATE="100000/min")
def test_a_flood_of_bad_bearer_tokens_writes_a_bounded_number_of_rows(api: APIClient, at_t0) -> None:
    for n in range(500):
        assert api.post(PROTECTED_URL, HTTP_AUTHORIZATION=f"Bearer not-a-token-{n}").status_code == 401
    assert len(rows("api.auth.refuse")) == 1
    at_t0.move_to(T0 + AFTER_WINDOW)
    audit_refusals_flush()
    entries = rows("api.auth.refuse")
    assert [(e.ip, e.details["reason"], e.details["count"]) for e in entries] == [
        (ATTACKER, "invalid", 1),
        (ATTACKER, "invalid", 499),
    ]
    assert entries[0].target == PROTECTED_URL  # the first keeps what it was about


@pytest.mark.django_db
@override_settings(API_UNAUTHENTICATED_RATE="5/min")
def test_past_its_budget_an_address_gets_429_until_the_period_ends(api: APIClient, party: WeddingParty, at_t0) -> None:
    statuses = [api.post(PROTECTED_URL, HTTP_AUTHORIZATION="Bearer forged").status_code for _ in range(5)]
    assert statuses == [401] * 5
    at_t0.shift(dt.timedelta(seconds=20))
    throttled = api.post(PROTECTED_URL, HTTP_AUTHORIZATION="Bearer forged")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "rate_limited"
    assert throttled.json()["error"]["retry_after"] == pytest.approx(40)
    # Every kind of unauthenticated request is held: none at all, and the login endpoint.
    assert api.post(PROTECTED_URL).status_code == 429
    assert api.post(reverse("token-obtain"), {"username": "x", "password": "y"}, format="json").status_code == 429
    # Valid credentials from the same address are not held back by an attacker sharing it.
    token = access_token_issue(user=party.priya.user)
    assert api.post(PROTECTED_URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 201
    # The 429s are audited like any unauthenticated refusal: aggregated.
    assert [(e.details["reason"], e.details["count"]) for e in rows("api.refuse")] == [("throttled", 1)]
    at_t0.move_to(T0 + AFTER_WINDOW)
    assert api.post(PROTECTED_URL, HTTP_AUTHORIZATION="Bearer forged").status_code == 401  # let in again
    audit_refusals_flush()
    throttles = rows("api.refuse")
    assert total(throttles) == 3


@pytest.mark.django_db
def test_the_default_budget_comes_from_the_setting() -> None:
    assert settings.API_UNAUTHENTICATED_RATE == "300/min"
