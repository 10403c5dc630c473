"""The realtime app's periodic work (Celery beat; schedules in wedsync/settings.py)."""

from __future__ import annotations

from celery import shared_task

from realtime.services.retention import events_purge_expired
from realtime.services.tickets import tickets_purge_expired


@shared_task(name="realtime.tasks.purge_expired_tickets", ignore_result=True)
def purge_expired_tickets() -> int:
    """Socket tickets past their expiry and grace; returns the rows deleted."""
    return tickets_purge_expired().total


@shared_task(name="realtime.tasks.purge_expired_events", ignore_result=True)
def purge_expired_events() -> int:
    """Events past ``REALTIME_RETENTION_DAYS`` that nothing needs, with their acks; returns the rows deleted."""
    return events_purge_expired().total
