"""Celery tasks of monitoring: thin wrappers around the services."""

from __future__ import annotations

import uuid

from celery import Task, shared_task

from monitoring.services.escalation import (
    DELIVER_ESCALATION_TASK,
    escalation_deliver,
    escalations_create_due,
    escalations_requeue_stalled,
)


@shared_task(name="monitoring.tasks.escalate_unacknowledged", ignore_result=True)
def escalate_unacknowledged() -> int:
    """Beat: escalate what no planner acknowledged in time; re-queue deliveries that stalled."""
    created = escalations_create_due()
    escalations_requeue_stalled()
    return len(created)


@shared_task(bind=True, name=DELIVER_ESCALATION_TASK, ignore_result=True, max_retries=None)
def deliver_escalation(self: Task[[str, str | None], str], escalation_id: str, dispatch_id: str | None = None) -> str:
    """One attempt, by the message queued with ``dispatch_id`` only (a message queued before
    dispatch ids existed carries none and does nothing: the stall re-queue takes its escalation
    over). The service counts attempts in the database and says when to try again, and with
    which dispatch id."""
    result = escalation_deliver(
        escalation_id=uuid.UUID(escalation_id), dispatch_id=uuid.UUID(dispatch_id) if dispatch_id else None
    )
    if result.retry_in is not None:
        raise self.retry(
            countdown=result.retry_in, kwargs={"escalation_id": escalation_id, "dispatch_id": str(result.dispatch_id)}
        )
    return result.status.value if result.status else "skipped"
