from __future__ import annotations

from celery import shared_task

from wedsync.services.audit import audit_refusals_flush


@shared_task(name="wedsync.tasks.flush_audit_refusals", ignore_result=True)
def flush_audit_refusals() -> int:
    return audit_refusals_flush()
