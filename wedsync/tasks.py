"""The core's periodic work (Celery beat; schedules in wedsync/settings.py): retention purges and
the audit log's refusal windows."""

from __future__ import annotations

from celery import shared_task

from wedsync.services.audit import audit_refusals_flush
from wedsync.services.retention import (
    audit_entries_purge_expired,
    idempotent_requests_purge_expired,
    outstanding_tokens_purge_expired,
    sessions_purge_expired,
)


@shared_task(name="wedsync.tasks.purge_expired_tokens", ignore_result=True)
def purge_expired_tokens() -> int:
    """Expired refresh tokens and their blacklist entries; returns the rows deleted."""
    return outstanding_tokens_purge_expired().total


@shared_task(name="wedsync.tasks.purge_expired_sessions", ignore_result=True)
def purge_expired_sessions() -> int:
    """Expired sessions; returns the rows deleted."""
    return sessions_purge_expired().total


@shared_task(name="wedsync.tasks.purge_expired_audit_entries", ignore_result=True)
def purge_expired_audit_entries() -> int:
    """Audit entries past ``WEDSYNC_AUDIT_RETENTION_DAYS``; returns the rows deleted."""
    return audit_entries_purge_expired().total


@shared_task(name="wedsync.tasks.purge_expired_idempotent_requests", ignore_result=True)
def purge_expired_idempotent_requests() -> int:
    """Stored answers to creating POSTs past ``API_IDEMPOTENCY_KEY_HOURS``; returns the rows deleted."""
    return idempotent_requests_purge_expired().total


@shared_task(name="wedsync.tasks.flush_audit_refusals", ignore_result=True)
def flush_audit_refusals() -> int:
    """Write the counts of the unauthenticated refusals' closed windows; returns the rows written."""
    return audit_refusals_flush()
