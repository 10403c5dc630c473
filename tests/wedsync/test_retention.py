"""Retention of refresh tokens, sessions and the audit log: bounded, repeatable purges, and an audit
log that still refuses every change except the retention job's deletion of old entries."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from tests.concurrency import race
from tests.factories import UserFactory
from tests.wedsync.test_settings import _production_env, _start_with
from wedsync.models import AuditLog, AuditOutcome, IdempotentRequest
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.auth import token_pair_obtain
from wedsync.services.retention import (
    AUDIT_RETENTION_CUTOFF_SETTING,
    audit_entries_purge_expired,
    idempotent_requests_purge_expired,
    outstanding_tokens_purge_expired,
    sessions_purge_expired,
)
from wedsync.tasks import (
    purge_expired_audit_entries,
    purge_expired_idempotent_requests,
    purge_expired_sessions,
    purge_expired_tokens,
)

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db]

GRACE = timedelta(seconds=settings.WEDSYNC_EXPIRED_GRACE_SECONDS)


def _audit(days_ago: float) -> AuditLog:
    with time_machine.travel(timezone.now() - timedelta(days=days_ago), tick=False):
        return audit_record(
            action=AuditAction.TOKEN_ISSUE, outcome=AuditOutcome.SUCCESS, actor=None, client=ClientInfo(None, "")
        )


# --- Refresh tokens ------------------------------------------------------------------------------------


def test_expired_refresh_tokens_go_with_their_blacklist_entries_after_the_grace() -> None:
    user = UserFactory(password="wedsync-demo-2026")
    client = ClientInfo(ip=None, user_agent="")
    old = timezone.now() - timedelta(seconds=settings.JWT_REFRESH_TTL) - GRACE - timedelta(minutes=1)
    with time_machine.travel(old, tick=False):
        token_pair_obtain(username=user.username, password="wedsync-demo-2026", client=client)
        BlacklistedToken.objects.create(token=OutstandingToken.objects.get())
    just_expired = timezone.now() - timedelta(seconds=settings.JWT_REFRESH_TTL) - timedelta(seconds=30)
    with time_machine.travel(just_expired, tick=False):
        token_pair_obtain(username=user.username, password="wedsync-demo-2026", client=client)
    token_pair_obtain(username=user.username, password="wedsync-demo-2026", client=client)
    assert OutstandingToken.objects.count() == 3

    result = outstanding_tokens_purge_expired()

    assert result.rows == {"token_blacklist.OutstandingToken": 1, "token_blacklist.BlacklistedToken": 1}
    # Expired a moment ago (within JWT leeway and the grace): still there, still blacklisted if it was.
    assert OutstandingToken.objects.count() == 2
    assert purge_expired_tokens.apply().get() == 0


# --- Sessions ------------------------------------------------------------------------------------------


def test_expired_sessions_go_after_the_grace() -> None:
    for expiry in (-GRACE - timedelta(minutes=1), -timedelta(minutes=1), timedelta(hours=1)):
        store = SessionStore()
        store["who"] = str(expiry)
        store.create()
        Session.objects.filter(session_key=store.session_key).update(expire_date=timezone.now() + expiry)
    assert sessions_purge_expired().rows == {"sessions.Session": 1}
    assert Session.objects.count() == 2
    assert purge_expired_sessions.apply().get() == 0


# --- Idempotency keys ----------------------------------------------------------------------------------


def test_stored_answers_to_creating_posts_go_after_their_hours(settings) -> None:
    settings.API_IDEMPOTENCY_KEY_HOURS = 24
    user = UserFactory()
    for key, age in (("old", timedelta(hours=24, minutes=1)), ("recent", timedelta(hours=23))):
        made = IdempotentRequest.objects.create(
            user=user, key=key, request_path="/api/v1/weddings/", request_hash="0" * 64, status_code=201, body={}
        )
        IdempotentRequest.objects.filter(pk=made.pk).update(created_at=timezone.now() - age)
    assert idempotent_requests_purge_expired().rows == {"wedsync.IdempotentRequest": 1}
    assert list(IdempotentRequest.objects.values_list("key", flat=True)) == ["recent"]
    assert purge_expired_idempotent_requests.apply().get() == 0


# --- The audit log -------------------------------------------------------------------------------------


def test_audit_entries_past_retention_go_in_batches_and_newer_ones_stay(settings) -> None:
    settings.WEDSYNC_AUDIT_RETENTION_DAYS = 365
    old = [_audit(days_ago=400 + n) for n in range(5)]
    recent = _audit(days_ago=300)
    first = audit_entries_purge_expired(batch_size=2, max_batches=2)
    assert (first.rows, first.batches, first.complete) == ({"wedsync.AuditLog": 4}, 2, False)
    assert set(AuditLog.objects.values_list("pk", flat=True)) == {old[0].pk, recent.pk}  # oldest first
    assert purge_expired_audit_entries.apply().get() == 1
    assert list(AuditLog.objects.values_list("pk", flat=True)) == [recent.pk]
    assert audit_entries_purge_expired().total == 0


def test_zero_days_keeps_the_audit_log_for_ever(settings) -> None:
    settings.WEDSYNC_AUDIT_RETENTION_DAYS = 0
    entry = _audit(days_ago=4000)
    assert audit_entries_purge_expired().total == 0
    assert AuditLog.objects.filter(pk=entry.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_two_workers_purging_the_audit_log_at_once_share_the_rows(settings) -> None:
    settings.WEDSYNC_RETENTION_BATCH_SIZE = 2
    for n in range(12):
        _audit(days_ago=400 + n)
    results = race(lambda: audit_entries_purge_expired().total, threads=2)
    assert sum(result for result in results if isinstance(result, int)) == 12
    assert not AuditLog.objects.exists()


def _raw(statement: str, *, cutoff: dt.datetime | None) -> None:
    """``statement`` in a transaction of its own, with the retention cutoff set in it when given."""
    with transaction.atomic(), connection.cursor() as cursor:
        if cutoff is not None:
            cursor.execute("SELECT set_config(%s, %s, true)", [AUDIT_RETENTION_CUTOFF_SETTING, cutoff.isoformat()])
        cursor.execute(statement)


def test_the_database_lets_a_transaction_that_names_a_cutoff_delete_only_entries_older_than_it() -> None:
    old, recent = _audit(days_ago=400), _audit(days_ago=40)
    cutoff = timezone.now() - timedelta(days=365)
    _raw(f"DELETE FROM wedsync_auditlog WHERE id = {old.pk}", cutoff=cutoff)  # noqa: S608  ids from the test
    assert not AuditLog.objects.filter(pk=old.pk).exists()
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"DELETE FROM wedsync_auditlog WHERE id = {recent.pk}", cutoff=cutoff)  # noqa: S608
    assert AuditLog.objects.filter(pk=recent.pk).exists()


@pytest.mark.parametrize(
    ("statement", "cutoff_days_ago"),
    [
        ("DELETE FROM wedsync_auditlog", None),  # no cutoff named: refused as before
        ("DELETE FROM wedsync_auditlog", 20),  # a cutoff younger than 29 days: refused whatever it says
        ("UPDATE wedsync_auditlog SET outcome = 'refused'", 365),  # updates: never
    ],
    ids=["no-cutoff", "cutoff-too-recent", "update"],
)
def test_the_database_refuses_everything_else(statement: str, cutoff_days_ago: int | None) -> None:
    entry = _audit(days_ago=4000)
    cutoff = None if cutoff_days_ago is None else timezone.now() - timedelta(days=cutoff_days_ago)
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(statement, cutoff=cutoff)
    assert AuditLog.objects.get(pk=entry.pk).outcome == "success"


@pytest.mark.django_db(transaction=True)  # real transactions: in a test's wrapping one, atomic() is a savepoint
def test_the_cutoff_lasts_one_transaction() -> None:
    old = _audit(days_ago=400)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config(%s, %s, true)",
            [AUDIT_RETENTION_CUTOFF_SETTING, (timezone.now() - timedelta(days=365)).isoformat()],
        )
    with pytest.raises(DatabaseError, match="append-only"):
        _raw(f"DELETE FROM wedsync_auditlog WHERE id = {old.pk}", cutoff=None)  # noqa: S608
    assert AuditLog.objects.filter(pk=old.pk).exists()


# --- Settings and schedule --------------------------------------------------------------------------


def test_beat_runs_every_purge_at_the_retention_sweep() -> None:
    purges = {
        entry["task"]: entry["schedule"]
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if ".tasks.purge_expired_" in entry["task"]
    }
    assert purges == dict.fromkeys(
        [
            "realtime.tasks.purge_expired_events",
            "realtime.tasks.purge_expired_tickets",
            "records.tasks.purge_expired_sync_history",
            "wedsync.tasks.purge_expired_tokens",
            "wedsync.tasks.purge_expired_sessions",
            "wedsync.tasks.purge_expired_audit_entries",
            "wedsync.tasks.purge_expired_idempotent_requests",
        ],
        float(settings.WEDSYNC_RETENTION_SWEEP_SECONDS),
    )


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        (
            {"WEDSYNC_AUDIT_RETENTION_DAYS": "7"},
            "WEDSYNC_AUDIT_RETENTION_DAYS must be 0 (keep for ever) or at least 30",
        ),
        ({"WEDSYNC_RETENTION_BATCH_SIZE": "0"}, "WEDSYNC_RETENTION_BATCH_SIZE must be at least 1"),
        ({"WEDSYNC_EXPIRED_GRACE_SECONDS": "1h"}, "WEDSYNC_EXPIRED_GRACE_SECONDS must be a whole number"),
    ],
)
def test_a_bad_retention_setting_stops_start_up(env: dict[str, str], complaint: str) -> None:
    result = _start_with({**_production_env(), **env})
    assert result.returncode != 0
    assert complaint in result.stderr
