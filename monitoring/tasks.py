"""Celery tasks of monitoring: thin wrappers around the services."""

from __future__ import annotations

import uuid

from celery import Task, shared_task
from django.utils import timezone

from monitoring.node_reports import registry_client
from monitoring.ops_probes import ops_observations
from monitoring.services.escalation import (
    DELIVER_ESCALATION_TASK,
    escalation_deliver,
    escalations_create_due,
    escalations_requeue_stalled,
)
from monitoring.services.event_webhooks.delivery import (
    DELIVER_EVENT_WEBHOOK_TASK,
    event_webhook_deliver,
    event_webhooks_dispatch_due,
)
from monitoring.services.ops_checks import ops_checks_record


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


@shared_task(name="monitoring.tasks.deliver_event_webhooks", ignore_result=True)
def deliver_event_webhooks() -> int:
    """Beat: queue a delivery task for each event webhook with something to send."""
    return len(event_webhooks_dispatch_due())


@shared_task(name=DELIVER_EVENT_WEBHOOK_TASK, ignore_result=True)
def deliver_event_webhook(webhook_id: int, dispatch_id: str) -> str:
    """Deliver one subscription's batches in order, by the message queued with ``dispatch_id`` only.
    A failed attempt is not retried here: the sweep queues the next one when its backoff is over."""
    return event_webhook_deliver(webhook_id=webhook_id, dispatch_id=uuid.UUID(dispatch_id)).outcome


@shared_task(name="monitoring.tasks.run_ops_checks", ignore_result=True)
def run_ops_checks() -> int:
    """Beat: observe the service (nodes' p99s, missing nodes, Redis, PostgreSQL, the queue) and raise
    or resolve operations alerts; returns how many it raised."""
    observed = ops_observations(client=registry_client())
    return len(ops_checks_record(observed=observed, now=timezone.now()).raised)
