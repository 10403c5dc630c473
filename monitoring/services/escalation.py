"""Escalation: a critical alert or an emergency that no planner acknowledged in time goes to the
integrator's webhook, with retries and backoff, and lands in the dead-letter table when they run out.

The beat task calls :func:`escalations_create_due`; each new escalation is delivered by the
``deliver_escalation`` task, one :func:`escalation_deliver` call per attempt. Staff retry a dead
letter with :func:`dead_letter_retry`. Decision records: docs/decisions/0010-escalation-webhook.md,
and 0023 for the claim that keeps a second message from sending the same attempt; receivers'
contract: docs/webhooks.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitoring.metrics import ESCALATION_DELIVERY_ATTEMPTS, ESCALATIONS_CREATED
from monitoring.models import DeadLetter, DeadLetterState, Escalation, EscalationStatus, EscalationSubject, OpsAlert
from monitoring.selectors import (
    alerts_due_for_escalation,
    emergencies_due_for_escalation,
    escalations_stalled,
    wedding_planners,
)
from monitoring.webhooks import backoff_countdown, webhook_body, webhook_post
from presence.models import Alert
from realtime.models import Event
from realtime.protocol import iso
from wedsync.celery import app as celery_app
from wedsync.models import Member, Wedding

logger = structlog.get_logger(__name__)

PAYLOAD_VERSION = 1
NO_URL_REASON = "WEDSYNC_ESCALATION_WEBHOOK_URL is not set: nothing was sent"
# An attempt's claim lasts its whole-request timeout plus this, for saving its outcome; the beat
# task re-queues it only WEDSYNC_ESCALATION_STALL_SECONDS after that (a worker that died).
CLAIM_GRACE_SECONDS = 5.0
# The Celery task that makes one delivery attempt (monitoring/tasks.py registers it under this name).
DELIVER_ESCALATION_TASK = "monitoring.tasks.deliver_escalation"


# --- What is sent ---------------------------------------------------------------------------------------


def _wedding_view(wedding: Wedding) -> dict[str, Any]:
    return {
        "id": wedding.pk,
        "name": wedding.name,
        "date": wedding.date.isoformat(),
        "time_zone": wedding.time_zone,
        "ceremony_at": iso(wedding.ceremony_at),
        "venue_name": wedding.venue_name,
        "venue_address": wedding.venue_address,
    }


def _member_view(member: Member | None) -> dict[str, Any] | None:
    if member is None:
        return None
    return {
        "id": member.pk,
        "role": member.role,
        "name": member.name,
        "vendor_company": member.vendor_company,
        "vendor_contact": member.vendor_contact,  # the phone (or e-mail) for the day; vendors only
    }


def _payload(
    *,
    escalation_id: uuid.UUID,
    subject: EscalationSubject,
    severity: str,
    wedding: Wedding,
    occurred_at: datetime,
    now: datetime,
    summary: str,
    member: Member | None,
    alert: dict[str, Any] | None = None,
    emergency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "version": PAYLOAD_VERSION,
        "escalation_id": str(escalation_id),
        "subject": subject.value,
        "severity": severity,
        "summary": summary,
        "occurred_at": iso(occurred_at),
        "escalated_at": iso(now),
        "unacknowledged_after_seconds": settings.WEDSYNC_ESCALATION_AFTER_SECONDS,
        "wedding": _wedding_view(wedding),
        "member": _member_view(member),
        "planners": [{"id": planner.pk, "name": planner.name} for planner in wedding_planners(wedding_id=wedding.pk)],
        "alert": alert,
        "emergency": emergency,
        "operations": None,
    }


def escalation_payload_for_alert(*, escalation_id: uuid.UUID, alert: Alert, now: datetime) -> dict[str, Any]:
    """The webhook body for a critical alert (``member`` is the person the alert is about)."""
    concerned = f" ({alert.member.name}, {alert.member.role})" if alert.member else ""
    return _payload(
        escalation_id=escalation_id,
        subject=EscalationSubject.ALERT,
        severity=alert.severity,
        wedding=alert.wedding,
        occurred_at=alert.raised_at,
        now=now,
        summary=f"{alert.get_kind_display()}{concerned} at {alert.wedding.name}: {alert.message}",
        member=alert.member,
        alert={"id": alert.pk, "kind": alert.kind, "message": alert.message, "device": alert.device},
    )


def escalation_payload_for_emergency(*, escalation_id: uuid.UUID, event: Event, now: datetime) -> dict[str, Any]:
    """The webhook body for an ``emergency.alert`` (``member`` is the person who raised it)."""
    sender = event.sender_member
    message = str(event.data.get("message", ""))
    raised_by = f" raised by {sender.name} ({sender.role})" if sender else ""
    return _payload(
        escalation_id=escalation_id,
        subject=EscalationSubject.EMERGENCY,
        severity="emergency",
        wedding=event.wedding,
        occurred_at=event.created_at,
        now=now,
        summary=f"Emergency{raised_by} at {event.wedding.name}: {message}",
        member=sender,
        emergency={
            "event_id": str(event.pk),
            "seq": event.seq,
            "message": message,
            "location": event.data.get("location"),
        },
    )


def escalation_payload_for_ops_alert(*, escalation_id: uuid.UUID, ops_alert: OpsAlert, now: datetime) -> dict[str, Any]:
    """The webhook body for a critical check of the service itself: no wedding, no member."""
    where = f" on {ops_alert.subject}" if ops_alert.subject else ""
    return {
        "version": PAYLOAD_VERSION,
        "escalation_id": str(escalation_id),
        "subject": EscalationSubject.OPERATIONS.value,
        "severity": ops_alert.severity,
        "summary": f"{ops_alert.get_kind_display()}{where}: {ops_alert.message}",
        "occurred_at": iso(ops_alert.raised_at),
        "escalated_at": iso(now),
        "unacknowledged_after_seconds": None,
        "wedding": None,
        "member": None,
        "planners": [],
        "alert": None,
        "emergency": None,
        "operations": {
            "id": ops_alert.pk,
            "check": ops_alert.kind,
            "subject": ops_alert.subject,
            "value": ops_alert.value,
            "threshold": ops_alert.threshold,
            "message": ops_alert.message,
        },
    }


# --- Escalating ---------------------------------------------------------------------------------------


def _enqueue_delivery(escalation_id: uuid.UUID, *, dispatch_id: uuid.UUID) -> None:
    """Queue, after the commit, the message that may make the escalation's next attempt: the one
    whose ``dispatch_id`` the row holds (the caller just saved it, under the row's lock). The task
    is named, not imported: its module calls this one."""
    delivery = celery_app.signature(
        DELIVER_ESCALATION_TASK, kwargs={"escalation_id": str(escalation_id), "dispatch_id": str(dispatch_id)}
    )
    transaction.on_commit(delivery.delay)


def escalation_create(
    *, alert: Alert | None = None, event: Event | None = None, ops_alert: OpsAlert | None = None, now: datetime
) -> Escalation | None:
    """Record the escalation of one critical alert, emergency event or critical operations alert
    and queue its delivery; None when it was escalated already (by another beat worker a moment
    ago: the unique constraint decides)."""
    escalation_id, dispatch_id = uuid.uuid4(), uuid.uuid4()
    wedding: Wedding | None
    if alert is not None:
        subject, wedding = EscalationSubject.ALERT, alert.wedding
        payload = escalation_payload_for_alert(escalation_id=escalation_id, alert=alert, now=now)
    elif event is not None:
        subject, wedding = EscalationSubject.EMERGENCY, event.wedding
        payload = escalation_payload_for_emergency(escalation_id=escalation_id, event=event, now=now)
    elif ops_alert is not None:
        subject, wedding = EscalationSubject.OPERATIONS, None
        payload = escalation_payload_for_ops_alert(escalation_id=escalation_id, ops_alert=ops_alert, now=now)
    else:
        raise ValueError("an escalation needs an alert, an event or an operations alert")
    try:
        with transaction.atomic():
            escalation = Escalation.objects.create(
                id=escalation_id,
                wedding=wedding,
                subject=subject,
                alert=alert,
                event=event,
                ops_alert=ops_alert,
                payload=payload,
                created_at=now,
                next_attempt_at=now,
                dispatch_id=dispatch_id,
            )
    except IntegrityError:
        return None
    ESCALATIONS_CREATED.labels(subject=subject.value).inc()
    logger.warning(
        "escalation.created",
        escalation=str(escalation.pk),
        subject=subject.value,
        wedding=wedding.pk if wedding else None,
        alert=alert.pk if alert else None,
        event_id=str(event.pk) if event else None,
        ops_alert=ops_alert.pk if ops_alert else None,
    )
    # after the commit: at once, or when the caller's transaction ends
    _enqueue_delivery(escalation.pk, dispatch_id=dispatch_id)
    return escalation


def escalations_create_due(*, now: datetime | None = None) -> list[Escalation]:
    """Escalate every critical alert and emergency that no planner acknowledged within
    ``WEDSYNC_ESCALATION_AFTER_SECONDS``, looking back ``WEDSYNC_ESCALATION_LOOKBACK_SECONDS``.
    Safe on several beat workers at once: each subject is escalated once."""
    now = now or timezone.now()
    due_before = now - timedelta(seconds=settings.WEDSYNC_ESCALATION_AFTER_SECONDS)
    due_after = now - timedelta(seconds=settings.WEDSYNC_ESCALATION_LOOKBACK_SECONDS)
    created: list[Escalation] = []
    for alert in alerts_due_for_escalation(raised_before=due_before, raised_after=due_after):
        escalation = escalation_create(alert=alert, now=now)
        if escalation is not None:
            created.append(escalation)
    for event in emergencies_due_for_escalation(created_before=due_before, created_after=due_after):
        escalation = escalation_create(event=event, now=now)
        if escalation is not None:
            created.append(escalation)
    return created


def escalations_requeue_stalled(*, now: datetime | None = None) -> int:
    """Queue again the pending escalations whose next attempt is overdue by more than
    ``WEDSYNC_ESCALATION_STALL_SECONDS`` (the broker lost the message, a worker died mid-attempt).
    Each is claimed under a row lock, so two beat workers queue it once. The new message gets a new
    dispatch id: the lost (or late) one, should it ever run, finds nothing to do."""
    now = now or timezone.now()
    due_before = now - timedelta(seconds=settings.WEDSYNC_ESCALATION_STALL_SECONDS)
    with transaction.atomic():
        stalled = list(escalations_stalled(due_before=due_before).select_for_update(skip_locked=True))
        for escalation in stalled:
            escalation.next_attempt_at = now
            escalation.dispatch_id = uuid.uuid4()
            escalation.save(update_fields=["next_attempt_at", "dispatch_id"])
            _enqueue_delivery(escalation.pk, dispatch_id=escalation.dispatch_id)
            logger.warning("escalation.requeued", escalation=str(escalation.pk), attempts=escalation.attempts)
    return len(stalled)


# --- Delivering ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one delivery message came to. ``retry_in``: seconds until the next attempt, when one is
    due, to be queued with ``dispatch_id``."""

    status: EscalationStatus | None  # None: nothing to do (done, gone, or the message was not the current one)
    attempt: int = 0
    retry_in: float | None = None
    dispatch_id: uuid.UUID | None = None


def _dead_letter(*, escalation: Escalation, error: str, now: datetime) -> None:
    """Close the current run as a dead letter; a staff retry that led here failed again."""
    escalation.dead_letters.filter(state=DeadLetterState.RETRYING).update(
        state=DeadLetterState.FAILED_AGAIN, resolved_at=now
    )
    DeadLetter.objects.create(
        escalation=escalation,
        payload=escalation.payload,
        last_error=error,
        attempts=escalation.run_attempts,
        created_at=now,
    )
    escalation.status = EscalationStatus.DEAD_LETTERED
    escalation.last_error = error
    escalation.next_attempt_at = None
    escalation.dispatch_id = None
    escalation.save(update_fields=["status", "last_error", "next_attempt_at", "dispatch_id"])
    logger.warning(
        "escalation.dead_lettered",
        escalation=str(escalation.pk),
        wedding=escalation.wedding_id,
        attempts=escalation.run_attempts,
        error=error,
    )


def _claim_attempt(
    *, escalation_id: uuid.UUID, dispatch_id: uuid.UUID | None, now: datetime
) -> tuple[Escalation, str] | DeliveryResult:
    """Claim the next attempt of a pending escalation for the message queued with ``dispatch_id``
    and return it with the webhook to send it to; or, when there is nothing to send, what it came
    to (done, gone, another message's turn; no webhook: dead-lettered at once).

    Claiming takes the dispatch id away under the row lock, so of any number of messages (a Celery
    retry, a re-queued copy, the broker delivering one twice) exactly one makes the attempt, and
    while it is in flight ``next_attempt_at`` is its whole-request timeout away: the stall re-queue
    cannot hand the same attempt to a second worker."""
    with transaction.atomic():
        escalation = Escalation.objects.select_for_update().filter(pk=escalation_id).first()
        if escalation is None or escalation.status != EscalationStatus.PENDING:
            return DeliveryResult(status=None)
        if dispatch_id is None or escalation.dispatch_id != dispatch_id:
            ESCALATION_DELIVERY_ATTEMPTS.labels(outcome="superseded").inc()
            logger.info("escalation.message_superseded", escalation=str(escalation_id), attempts=escalation.attempts)
            return DeliveryResult(status=None)
        url = settings.WEDSYNC_ESCALATION_WEBHOOK_URL
        if not url:
            ESCALATION_DELIVERY_ATTEMPTS.labels(outcome="no_webhook").inc()
            _dead_letter(escalation=escalation, error=NO_URL_REASON, now=now)
            return DeliveryResult(status=EscalationStatus.DEAD_LETTERED)
        escalation.attempts += 1
        escalation.run_attempts += 1
        escalation.last_attempt_at = now
        escalation.dispatch_id = None
        # Until this attempt's outcome is saved: the POST ends within its whole-request timeout;
        # a worker that dies meanwhile is noticed WEDSYNC_ESCALATION_STALL_SECONDS after it.
        escalation.next_attempt_at = now + timedelta(
            seconds=settings.WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS + CLAIM_GRACE_SECONDS
        )
        escalation.save(update_fields=["attempts", "run_attempts", "last_attempt_at", "next_attempt_at", "dispatch_id"])
        return escalation, url


def escalation_deliver(*, escalation_id: uuid.UUID, dispatch_id: uuid.UUID | None) -> DeliveryResult:
    """One delivery attempt by the message queued with ``dispatch_id``: POST the signed payload.
    2xx is delivered; anything else is retried after an exponential backoff with jitter, until
    ``WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS`` attempts in this run, then dead-lettered. The HTTP call
    holds no database lock and ends within ``WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS``."""
    claimed = _claim_attempt(escalation_id=escalation_id, dispatch_id=dispatch_id, now=timezone.now())
    if isinstance(claimed, DeliveryResult):
        return claimed
    claimed_escalation, url = claimed
    attempt = claimed_escalation.run_attempts
    claimed_attempts = claimed_escalation.attempts
    outcome = webhook_post(
        url=url,
        secret=settings.WEDSYNC_ESCALATION_WEBHOOK_SECRET,
        body=webhook_body(claimed_escalation.payload),
        delivery_id=str(claimed_escalation.pk),
        attempt=attempt,
        timestamp=int(timezone.now().timestamp()),
        timeout=settings.WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS,
    )
    now = timezone.now()
    with transaction.atomic():
        escalation = Escalation.objects.select_for_update().get(pk=escalation_id)
        if escalation.status != EscalationStatus.PENDING:
            return DeliveryResult(status=None, attempt=attempt)  # a concurrent run finished it
        if escalation.attempts != claimed_attempts and not outcome.delivered:
            # This worker outlived its claim (frozen past the stall re-queue) and a later attempt
            # was claimed: that attempt owns the schedule now. A delivery is still worth saving.
            logger.warning("escalation.claim_lapsed", escalation=str(escalation_id), attempt=attempt)
            return DeliveryResult(status=None, attempt=attempt)
        if outcome.delivered:
            ESCALATION_DELIVERY_ATTEMPTS.labels(outcome="delivered").inc()
            escalation.status = EscalationStatus.DELIVERED
            escalation.delivered_at = now
            escalation.next_attempt_at = None
            escalation.save(update_fields=["status", "delivered_at", "next_attempt_at"])
            escalation.dead_letters.filter(state=DeadLetterState.RETRYING).update(
                state=DeadLetterState.DELIVERED, resolved_at=now
            )
            logger.info("escalation.delivered", escalation=str(escalation.pk), attempt=attempt, status=outcome.status)
            return DeliveryResult(status=EscalationStatus.DELIVERED, attempt=attempt)
        escalation.last_error = outcome.error
        if escalation.run_attempts >= settings.WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS:
            ESCALATION_DELIVERY_ATTEMPTS.labels(outcome="dead_lettered").inc()
            _dead_letter(escalation=escalation, error=outcome.error, now=now)
            return DeliveryResult(status=EscalationStatus.DEAD_LETTERED, attempt=attempt)
        ESCALATION_DELIVERY_ATTEMPTS.labels(outcome="retry").inc()
        retry_in = backoff_countdown(
            attempt=attempt,
            base=settings.WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS,
            cap=settings.WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_MAX_SECONDS,
        )
        escalation.next_attempt_at = now + timedelta(seconds=retry_in)
        escalation.dispatch_id = uuid.uuid4()  # the retry message's, queued by the caller
        escalation.save(update_fields=["last_error", "next_attempt_at", "dispatch_id"])
    logger.warning(
        "escalation.retry", escalation=str(escalation_id), attempt=attempt, retry_in=retry_in, error=outcome.error
    )
    return DeliveryResult(
        status=EscalationStatus.PENDING, attempt=attempt, retry_in=retry_in, dispatch_id=escalation.dispatch_id
    )


# --- Staff ----------------------------------------------------------------------------------------------


def dead_letter_retry(*, dead_letter: DeadLetter, actor: User | None) -> bool:
    """Start a new delivery run for an open dead letter; False when it is not open (retried
    already, perhaps by a colleague a moment ago). The outcome lands on the dead letter: delivered,
    or failed again with a newer dead letter."""
    if dead_letter.escalation_id is None:
        raise ValueError("not an escalation's dead letter")
    now = timezone.now()
    with transaction.atomic():
        # The escalation first, then the dead letter: the order delivery locks them in.
        escalation = Escalation.objects.select_for_update().get(pk=dead_letter.escalation_id)
        locked = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
        if locked.state != DeadLetterState.OPEN or escalation.status != EscalationStatus.DEAD_LETTERED:
            return False
        locked.state = DeadLetterState.RETRYING
        locked.retried_at = now
        locked.retried_by = actor
        locked.save(update_fields=["state", "retried_at", "retried_by"])
        escalation.status = EscalationStatus.PENDING
        escalation.run_attempts = 0
        escalation.next_attempt_at = now
        escalation.dispatch_id = uuid.uuid4()
        escalation.save(update_fields=["status", "run_attempts", "next_attempt_at", "dispatch_id"])
        _enqueue_delivery(escalation.pk, dispatch_id=escalation.dispatch_id)
    logger.info("escalation.retry_requested", escalation=str(escalation.pk), dead_letter=locked.pk)
    return True
