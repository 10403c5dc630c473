"""The durable event log's retention: events older than ``REALTIME_RETENTION_DAYS`` are deleted,
with their acks, except those something still needs (docs/decisions/0023).

A resubscribe whose first missed event is gone (or older than retention) is told
``recovered: false`` and reloads over REST (:func:`realtime.selectors.events_replay`), so a purge
never leaves a silent gap; the events kept past retention are never replayed for the same reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from monitoring.models import Escalation, EscalationStatus
from presence.models import Alert, Emergency
from realtime.models import Event
from wedsync.services.retention import PurgeResult, orm_batch_delete, purge_in_batches

# Every relation that points at an event, and what the purge does about it. A relation missing
# here fails tests/realtime/test_event_retention.py: whoever adds one decides what it needs.
EVENT_REFERENCES: dict[str, str] = {
    "presence.Emergency.raised_event": "kept, whatever the emergency's state: deleting the event "
    "would delete the emergency (CASCADE); with it stay its acks, who knew of it and when",
    "presence.Alert.raised_event": "kept while the alert is open (a planner's ack of it acknowledges "
    "the alert); once resolved the event goes and the reference is set to null",
    "monitoring.Escalation.event": "kept until the escalation is delivered (pending, dead-lettered, "
    "retrying: staff look at it); then the event goes and the reference is set to null (its "
    "payload was frozen when it was made)",
    "realtime.EventAck.event": "deleted with its event",
}


def events_past_retention(*, now: datetime | None = None) -> QuerySet[Event]:
    """Events older than ``REALTIME_RETENTION_DAYS`` that nothing in :data:`EVENT_REFERENCES`
    still needs."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.REALTIME_RETENTION_DAYS)
    return (
        Event.objects.filter(created_at__lt=cutoff)
        .exclude(Exists(Emergency.objects.filter(raised_event_id=OuterRef("pk"))))
        .exclude(Exists(Alert.objects.filter(raised_event_id=OuterRef("pk"), resolved_at__isnull=True)))
        .exclude(Exists(Escalation.objects.filter(event_id=OuterRef("pk")).exclude(status=EscalationStatus.DELIVERED)))
    )


def events_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeResult:
    """Delete the events past retention that nothing needs, in bounded batches; their acks go
    with them (CASCADE), resolved alerts and delivered escalations keep a null reference."""
    return purge_in_batches(
        purge="events",
        delete_batch=orm_batch_delete(events_past_retention(now=now)),
        batch_size=batch_size,
        max_batches=max_batches,
    )
