"""Celery tasks of monitoring: thin wrappers around the services."""

from __future__ import annotations

import uuid

from celery import Task, shared_task

from monitoring.services.escalation import escalation_deliver, escalations_create_due, escalations_requeue_stalled


@shared_task(name="monitoring.tasks.escalate_unacknowledged", ignore_result=True)
def escalate_unacknowledged() -> int:
    """Beat: escalate what no planner acknowledged in time; re-queue deliveries that stalled."""
    created = escalations_create_due()
    escalations_requeue_stalled()
    return len(created)


@shared_task(bind=True, name="monitoring.tasks.deliver_escalation", ignore_result=True, max_retries=None)
def deliver_escalation(self: Task[[str], str], escalation_id: str) -> str:
    """One attempt; the service counts attempts (in the database, so a re-queued or duplicated
    message does not reset them) and says when to try again."""
    result = escalation_deliver(escalation_id=uuid.UUID(escalation_id))
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    return result.status.value if result.status else "skipped"
