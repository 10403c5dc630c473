"""What escalates: a critical alert or an emergency no planner acknowledged within
``WEDSYNC_ESCALATION_AFTER_SECONDS``, once each, even with two beat workers at once."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from monitoring.models import Escalation, EscalationStatus, EscalationSubject
from monitoring.services.escalation import escalations_create_due
from presence.alerts.rules import Finding, Subject
from presence.alerts.services import alert_escalate, alert_raise
from presence.models import AlertKind, AlertSeverity, Emergency
from realtime.models import Event
from realtime.names import EventType
from realtime.services.acks import event_ack
from realtime.services.events import event_publish
from tests.concurrency import race
from tests.personas import WeddingParty
from wedsync.models import Member

pytestmark = [pytest.mark.requires_postgres]

T0 = dt.datetime(2026, 6, 13, 15, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)


def _after() -> dt.timedelta:
    return dt.timedelta(seconds=settings.WEDSYNC_ESCALATION_AFTER_SECONDS)


def _emergency(party: WeddingParty, message: str = "Fire in the kitchen") -> Event:
    published = event_publish(
        wedding_id=party.wedding.pk,
        event_type=EventType.EMERGENCY_ALERT,
        data={"message": message, "location": "reception_hall"},
        sender=party.carmen,
    )
    return Event.objects.get(pk=published.id)


def _escalated() -> list[tuple[str, int | None, str | None]]:
    return [
        (e.subject, e.alert_id, str(e.event_id) if e.event_id else None)
        for e in Escalation.objects.order_by("created_at", "subject")
    ]


@pytest.mark.django_db
def test_an_unacknowledged_critical_alert_escalates_after_two_minutes_not_before(party: WeddingParty, make_alert):
    with time_machine.travel(T0, tick=False) as clock:
        alert = make_alert(party.paula)
        clock.move_to(T0 + _after() - SECOND)
        assert escalations_create_due() == []
        clock.move_to(T0 + _after() + SECOND)
        (escalation,) = escalations_create_due()
    assert (escalation.subject, escalation.alert_id, escalation.status) == (
        EscalationSubject.ALERT,
        alert.pk,
        EscalationStatus.PENDING,
    )
    payload = escalation.payload
    assert payload["escalation_id"] == str(escalation.pk)
    assert (payload["subject"], payload["severity"], payload["occurred_at"]) == (
        "alert",
        "critical",
        "2026-06-13T15:00:00.000Z",
    )
    assert payload["wedding"]["id"] == party.wedding.pk
    assert payload["wedding"]["venue_name"] == party.wedding.venue_name
    assert payload["member"] == {
        "id": party.paula.pk,
        "role": "photographer",
        "name": party.paula.name,
        "vendor_company": party.paula.vendor_company,
        "vendor_contact": party.paula.vendor_contact,
    }
    assert payload["planners"] == [{"id": party.priya.pk, "name": party.priya.name}]
    assert payload["alert"]["kind"] == "key_person_missing"
    assert payload["emergency"] is None


@pytest.mark.django_db
def test_an_emergency_no_planner_acknowledged_escalates_after_two_minutes(party: WeddingParty):
    with time_machine.travel(T0, tick=False) as clock:
        event = _emergency(party)
        event_ack(user_id=party.gil.user_id, wedding_id=party.wedding.pk, seq=event.seq)  # a guest is not a planner
        clock.move_to(T0 + _after() - SECOND)
        assert escalations_create_due() == []
        clock.move_to(T0 + _after() + SECOND)
        (escalation,) = escalations_create_due()
    assert (escalation.subject, escalation.event_id) == (EscalationSubject.EMERGENCY, event.pk)
    payload = escalation.payload
    assert (payload["severity"], payload["member"]["id"], payload["member"]["role"]) == (
        "emergency",
        party.carmen.pk,
        "caterer",
    )
    assert payload["emergency"] == {
        "event_id": str(event.pk),
        "seq": event.seq,
        "message": "Fire in the kitchen",
        "location": "reception_hall",
    }


@pytest.mark.django_db
def test_acknowledged_resolved_or_lesser_alerts_do_not_escalate(party: WeddingParty, make_alert):
    with time_machine.travel(T0, tick=False) as clock:
        make_alert(party.paula, acknowledged_at=T0 + SECOND, acknowledged_by=party.priya.user)
        make_alert(party.olu, resolved_at=T0 + SECOND)
        make_alert(party.victor, severity=AlertSeverity.WARNING)
        raised = event_publish(
            wedding_id=party.wedding.pk, event_type=EventType.ALERT_RAISED, data={"kind": "key_person_missing"}
        )
        make_alert(party.vik, raised_event_id=raised.id)  # its alert.raised event acked by the planner
        event_ack(user_id=party.priya.user_id, wedding_id=party.wedding.pk, seq=raised.seq)
        clock.move_to(T0 + _after() + SECOND)
        assert escalations_create_due() == []


@pytest.mark.django_db
def test_acknowledged_resolved_or_old_emergencies_do_not_escalate(party: WeddingParty):
    lookback = dt.timedelta(seconds=settings.WEDSYNC_ESCALATION_LOOKBACK_SECONDS)
    with time_machine.travel(T0 - lookback, tick=False) as clock:
        _emergency(party, "long ago")  # past the look-back by the time it is looked for
        clock.move_to(T0)
        acknowledged = _emergency(party, "acknowledged")
        event_ack(user_id=party.priya.user_id, wedding_id=party.wedding.pk, seq=acknowledged.seq)
        resolved = _emergency(party, "resolved")
        Emergency.objects.create(
            wedding=party.wedding, raised_event=resolved, raised_by=party.carmen, resolved_at=T0 + SECOND
        )
        clock.move_to(T0 + _after() + SECOND)
        assert escalations_create_due() == []


@pytest.mark.django_db
def test_an_alert_raised_to_critical_by_the_rules_escalates_two_minutes_after_that_unless_a_planner_acks(
    party: WeddingParty,
):
    def finding(member: Member, severity: AlertSeverity) -> Finding:
        subject = Subject(kind=AlertKind.KEY_PERSON_MISSING, member_id=member.pk)
        return Finding(subject=subject, severity=severity, message=f"{member.name} is missing")

    critical_at = T0 + dt.timedelta(minutes=45)  # warning at T-30, critical at T-15
    with time_machine.travel(T0, tick=False) as clock:
        photographer = alert_raise(
            wedding_id=party.wedding.pk, finding=finding(party.paula, AlertSeverity.WARNING), now=T0
        )
        officiant = alert_raise(wedding_id=party.wedding.pk, finding=finding(party.olu, AlertSeverity.WARNING), now=T0)
        assert photographer is not None and officiant is not None
        clock.move_to(critical_at)
        for alert, member in ((photographer, party.paula), (officiant, party.olu)):
            assert alert_escalate(alert=alert, finding=finding(member, AlertSeverity.CRITICAL), now=critical_at)
        assert escalations_create_due() == []  # raised long ago, but critical only now
        planner_saw = officiant.raised_event
        assert planner_saw is not None
        event_ack(user_id=party.priya.user_id, wedding_id=party.wedding.pk, seq=planner_saw.seq)
        clock.move_to(critical_at + _after() + SECOND)
        (escalation,) = escalations_create_due()
    assert (escalation.alert_id, escalation.payload["member"]["id"]) == (photographer.pk, party.paula.pk)


@pytest.mark.django_db
def test_each_subject_escalates_once(party: WeddingParty, make_alert):
    with time_machine.travel(T0, tick=False) as clock:
        make_alert(party.paula)
        _emergency(party)
        clock.move_to(T0 + _after() + SECOND)
        assert len(escalations_create_due()) == 2
        clock.shift(_after())
        assert escalations_create_due() == []
    assert sorted(subject for subject, _, _ in _escalated()) == ["alert", "emergency"]


@pytest.mark.requires_redis  # the emergencies' fan-out after commit goes through the channel layer
@pytest.mark.django_db(transaction=True)
def test_beat_workers_running_at_once_escalate_and_deliver_each_subject_once(
    party: WeddingParty, make_alert, eager_celery, hook
):
    raised_at = timezone.now() - _after() - SECOND
    alerts = [make_alert(member, raised_at=raised_at) for member in (party.paula, party.olu, party.victor)]
    events = [_emergency(party, message) for message in ("Fire in the kitchen", "Guest fainted")]
    Event.objects.filter(pk__in=[event.pk for event in events]).update(created_at=raised_at)
    workers = 3
    results = race(escalations_create_due, threads=workers)
    created = [len(result) for result in results if isinstance(result, list)]
    assert (len(created), sum(created)) == (workers, len(alerts) + len(events))
    assert sorted(_escalated(), key=str) == sorted(
        [("alert", alert.pk, None) for alert in alerts] + [("emergency", None, str(event.pk)) for event in events],
        key=str,
    )
    assert sorted(received.headers["x-wedsync-escalation-id"] for received in hook.received) == sorted(
        str(pk) for pk in Escalation.objects.values_list("pk", flat=True)
    )
    assert set(Escalation.objects.values_list("status", flat=True)) == {EscalationStatus.DELIVERED}
