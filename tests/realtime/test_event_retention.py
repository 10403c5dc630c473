"""The event log's retention: events past REALTIME_RETENTION_DAYS go with their acks, in bounded
batches, except what open alerts, emergencies and undelivered escalations still point at."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db.models import ForeignObjectRel
from django.utils import timezone

from monitoring.models import DeadLetter, Escalation, EscalationStatus, EscalationSubject
from presence.models import Alert, Emergency
from realtime.models import Event, EventAck
from realtime.selectors import events_replay
from realtime.services.events import member_event_publish
from realtime.services.retention import EVENT_REFERENCES, events_purge_expired
from realtime.tasks import purge_expired_events
from tests.concurrency import race
from tests.factories import AlertFactory
from tests.personas import WeddingParty

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db]


def _publish(party: WeddingParty, text: str, *, type_name: str = "chat.message") -> Event:
    field = "message" if type_name == "emergency.alert" else "text"
    published = member_event_publish(member=party.priya, type_name=type_name, data={field: text})
    return Event.objects.get(pk=published.id)


def _age(*events: Event, days: float | None = None) -> None:
    """Make events older than retention (by a minute), or ``days`` old."""
    age = timedelta(days=days) if days is not None else timedelta(days=settings.REALTIME_RETENTION_DAYS, minutes=1)
    Event.objects.filter(pk__in=[event.pk for event in events]).update(created_at=timezone.now() - age)


def _escalation(party: WeddingParty, event: Event, status: EscalationStatus) -> Escalation:
    return Escalation.objects.create(
        wedding=party.wedding, subject=EscalationSubject.EMERGENCY, event=event, payload={}, status=status
    )


def test_every_relation_to_an_event_has_a_retention_decision() -> None:
    """A model that starts pointing at events must say what the purge does about it
    (realtime/services/retention.py): keep the event, or let it go and how."""
    relations = {
        f"{rel.field.model._meta.label}.{rel.field.name}"
        for rel in Event._meta.get_fields(include_hidden=True)  # related_name="+" ones are hidden
        if isinstance(rel, ForeignObjectRel)
    }
    assert relations == set(EVENT_REFERENCES)


def test_old_events_go_with_their_acks_and_what_is_still_needed_stays(party: WeddingParty) -> None:
    chat = _publish(party, "Cake at 4")
    EventAck.objects.create(event=chat, member=party.ana)
    recent = _publish(party, "Cake moved to 5")
    # An emergency (resolved long ago) and who acknowledged it: the record of the day.
    fire = _publish(party, "Fire in the kitchen", type_name="emergency.alert")  # opens its emergency
    Emergency.objects.filter(raised_event=fire).update(resolved_at=timezone.now() - timedelta(days=8))
    EventAck.objects.create(event=fire, member=party.ana)
    open_alert_event, resolved_alert_event = _publish(party, "alert 1"), _publish(party, "alert 2")
    open_alert = AlertFactory(wedding=party.wedding, raised_event=open_alert_event)
    resolved_alert = AlertFactory(wedding=party.wedding, raised_event=resolved_alert_event, resolved_at=timezone.now())
    pending, dead, delivered = (_publish(party, f"escalated {n}") for n in range(3))
    _escalation(party, pending, EscalationStatus.PENDING)
    dead_lettered = _escalation(party, dead, EscalationStatus.DEAD_LETTERED)
    DeadLetter.objects.create(escalation=dead_lettered, payload={}, last_error="HTTP 503", attempts=6)
    delivered_escalation = _escalation(party, delivered, EscalationStatus.DELIVERED)
    _age(chat, fire, open_alert_event, resolved_alert_event, pending, dead, delivered)

    result = events_purge_expired()

    kept = set(Event.objects.values_list("pk", flat=True))
    assert kept == {recent.pk, fire.pk, open_alert_event.pk, pending.pk, dead.pk}
    assert result.rows == {"realtime.Event": 3, "realtime.EventAck": 1}
    assert list(EventAck.objects.values_list("event_id", flat=True)) == [fire.pk]
    assert Emergency.objects.filter(raised_event=fire).exists()
    assert Alert.objects.get(pk=open_alert.pk).raised_event_id == open_alert_event.pk
    # What let its event go keeps a null reference, never a dangling one.
    assert Alert.objects.get(pk=resolved_alert.pk).raised_event_id is None
    assert Escalation.objects.get(pk=delivered_escalation.pk).event_id is None
    assert DeadLetter.objects.filter(escalation=dead_lettered).exists()

    assert events_purge_expired().total == 0  # idempotent: a second run finds nothing


def test_the_purge_works_in_bounded_batches_and_the_next_run_goes_on(party: WeddingParty) -> None:
    old = [_publish(party, f"m{n}") for n in range(5)]
    _age(*old)
    first = events_purge_expired(batch_size=2, max_batches=2)
    assert (first.total, first.batches, first.complete) == (4, 2, False)
    assert Event.objects.count() == 1
    second = events_purge_expired(batch_size=2, max_batches=2)
    assert (second.total, second.batches, second.complete) == (1, 1, True)
    assert not Event.objects.exists()


def test_a_resubscribe_behind_the_purge_is_told_to_reload(party: WeddingParty) -> None:
    events = [_publish(party, f"m{n}") for n in range(3)]
    _age(*events[:2])
    events_purge_expired()
    behind = events_replay(
        wedding_id=party.wedding.pk, member_id=party.gil.pk, role=party.gil.role, since=0, epoch=None, min_priority=0
    )
    assert (behind.recovered, behind.first.frames) == (False, [])


def test_the_beat_task_purges_and_counts(party: WeddingParty) -> None:
    old = [_publish(party, f"m{n}") for n in range(2)]
    EventAck.objects.create(event=old[0], member=party.ana)
    _age(*old)
    assert purge_expired_events.apply().get() == 3


@pytest.mark.django_db(transaction=True)
def test_two_workers_purging_at_once_share_the_rows(party: WeddingParty, settings) -> None:
    old = [_publish(party, f"m{n}") for n in range(30)]
    _age(*old)
    settings.WEDSYNC_RETENTION_BATCH_SIZE = 3
    results = race(lambda: events_purge_expired().total, threads=2)
    assert sum(result for result in results if isinstance(result, int)) == 30
    assert not Event.objects.exists()
