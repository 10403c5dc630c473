from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.urls import reverse

from tests.factories import UserFactory
from wedsync.models import AuditLog, AuditOutcome
from wedsync.models.audit import AuditLogIsAppendOnly
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def entry() -> AuditLog:
    return audit_record(
        action=AuditAction.TOKEN_ISSUE,
        outcome=AuditOutcome.SUCCESS,
        actor=UserFactory(username="auditee"),
        client=ClientInfo(ip="192.0.2.7", user_agent="phone/1.0"),
        details={"grant": "password"},
    )


def test_an_entry_records_who_how_where_and_what(entry: AuditLog) -> None:
    stored = AuditLog.objects.get(pk=entry.pk)
    assert (stored.action, stored.outcome, stored.actor_label) == ("auth.token.issue", "success", "auditee")
    assert (stored.ip, stored.user_agent, stored.details) == ("192.0.2.7", "phone/1.0", {"grant": "password"})
    assert stored.at is not None


def test_saving_a_changed_entry_is_refused(entry: AuditLog) -> None:
    entry.outcome = AuditOutcome.REFUSED
    with pytest.raises(AuditLogIsAppendOnly):
        entry.save()
    assert AuditLog.objects.get(pk=entry.pk).outcome == "success"


def test_deleting_an_entry_is_refused(entry: AuditLog) -> None:
    with pytest.raises(AuditLogIsAppendOnly):
        entry.delete()
    assert AuditLog.objects.filter(pk=entry.pk).exists()


@pytest.mark.parametrize(
    "attempt",
    [
        lambda qs: qs.update(outcome="refused"),
        lambda qs: qs.delete(),
        lambda qs: qs.bulk_update(list(qs), ["outcome"]),
        lambda qs: qs.update_or_create(pk=qs.first().pk, defaults={"outcome": "refused"}),
    ],
    ids=["update", "delete", "bulk_update", "update_or_create"],
)
def test_queryset_writes_are_refused(entry: AuditLog, attempt) -> None:
    with pytest.raises(AuditLogIsAppendOnly):
        attempt(AuditLog.objects.filter(pk=entry.pk))
    assert AuditLog.objects.get(pk=entry.pk).outcome == "success"


def test_deleting_the_actor_keeps_the_entry(entry: AuditLog) -> None:
    assert entry.actor is not None
    entry.actor.delete()
    assert AuditLog.objects.get(pk=entry.pk).actor_label == "auditee"


@pytest.mark.requires_postgres
@pytest.mark.parametrize(
    "statement", ["UPDATE wedsync_auditlog SET outcome = 'refused'", "DELETE FROM wedsync_auditlog"]
)
def test_postgres_refuses_raw_sql_changes(entry: AuditLog, statement: str) -> None:
    if connection.vendor != "postgresql":
        pytest.fail("requires_postgres tests must run on PostgreSQL")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditLog.objects.get(pk=entry.pk).outcome == "success"


def test_the_admin_shows_entries_but_cannot_change_or_delete_them(entry: AuditLog, admin_client) -> None:
    change_url = reverse("admin:wedsync_auditlog_change", args=[entry.pk])
    assert admin_client.get(reverse("admin:wedsync_auditlog_changelist")).status_code == 200
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert admin_client.post(change_url, {"outcome": "refused"}).status_code == 403
    assert (
        admin_client.post(reverse("admin:wedsync_auditlog_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    )
    assert admin_client.get(reverse("admin:wedsync_auditlog_add")).status_code == 403
    assert AuditLog.objects.get(pk=entry.pk).outcome == "success"


def test_a_new_instance_with_an_existing_pk_cannot_overwrite(entry: AuditLog) -> None:
    from django.db import IntegrityError

    forged = AuditLog(pk=entry.pk, action="forged", outcome="success")
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()
    assert AuditLog.objects.get(pk=entry.pk).action == "auth.token.issue"


def test_bulk_upserts_are_refused(entry: AuditLog) -> None:
    forged = AuditLog(pk=entry.pk, action="forged", outcome="success")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditLog.objects.bulk_create([forged], update_conflicts=True, unique_fields=["id"], update_fields=["action"])
    assert AuditLog.objects.get(pk=entry.pk).action == "auth.token.issue"
