"""The records app's periodic work (Celery beat; schedules in wedsync/settings.py)."""

from __future__ import annotations

from celery import shared_task

from records.retention import sync_history_purge_expired


@shared_task(name="records.tasks.purge_expired_sync_history", ignore_result=True)
def purge_expired_sync_history() -> int:
    """Op ids, revisions and tombstones past ``REALTIME_RETENTION_DAYS``; returns the rows deleted."""
    return sum(result.total for result in sync_history_purge_expired())
