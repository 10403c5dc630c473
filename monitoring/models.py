"""Escalations: what nobody acknowledged in time, sent to the integrator's webhook; integrators'
subscriptions to a wedding's events (event webhooks); and what could not be delivered (dead letters,
for staff to retry). See docs/decisions/0010-escalation-webhook.md and 0032-outbound-event-webhooks.md.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class EscalationSubject(models.TextChoices):
    ALERT = "alert", "Critical alert"
    EMERGENCY = "emergency", "Emergency"
    OPERATIONS = "operations", "Operations alert"  # a critical check of the service itself: no wedding


class EscalationStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # queued, being sent, or waiting for its next attempt
    DELIVERED = "delivered", "Delivered"
    DEAD_LETTERED = "dead_lettered", "Dead-lettered"


class Escalation(models.Model):
    """One subject (a critical alert or an emergency event) escalated once, with its delivery state.

    The primary key is the stable ``escalation_id`` the integrator de-duplicates on: every attempt,
    retry and staff retry of one escalation sends the same id and the same body.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # None for an operations alert, which concerns the service rather than one wedding.
    wedding = models.ForeignKey(
        "wedsync.Wedding", on_delete=models.CASCADE, null=True, blank=True, related_name="escalations"
    )
    subject = models.CharField(max_length=16, choices=EscalationSubject.choices)
    # One escalation per subject: the unique constraints below settle two beat workers racing.
    alert = models.ForeignKey("presence.Alert", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    event = models.ForeignKey("realtime.Event", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    ops_alert = models.ForeignKey(
        "monitoring.OpsAlert", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    payload = models.JSONField(help_text="The webhook body, frozen when the escalation was made.")
    status = models.CharField(max_length=16, choices=EscalationStatus.choices, default=EscalationStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="HTTP attempts, all runs together.")
    run_attempts = models.PositiveIntegerField(
        default=0, help_text="HTTP attempts in the current run (a staff retry starts a new run)."
    )
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # While pending: when the next attempt is due (or the current one must have ended); the beat
    # task re-queues a pending escalation long past it (a lost broker message, a dead worker).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The one queued delivery message that may make the next attempt: every message carries the
    # id it was queued with, and claiming an attempt takes the id away, so a duplicate, superseded
    # or re-delivered message finds nothing to do (docs/decisions/0023).
    dispatch_id = models.UUIDField(null=True, blank=True, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["alert"], name="escalation_once_per_alert"),
            models.UniqueConstraint(fields=["event"], name="escalation_once_per_event"),
            models.UniqueConstraint(fields=["ops_alert"], name="escalation_once_per_ops_alert"),
            models.CheckConstraint(
                condition=(
                    models.Q(
                        subject=EscalationSubject.ALERT,
                        event__isnull=True,
                        ops_alert__isnull=True,
                        wedding__isnull=False,
                    )
                    | models.Q(
                        subject=EscalationSubject.EMERGENCY,
                        alert__isnull=True,
                        ops_alert__isnull=True,
                        wedding__isnull=False,
                    )
                    | models.Q(
                        subject=EscalationSubject.OPERATIONS,
                        alert__isnull=True,
                        event__isnull=True,
                        wedding__isnull=True,
                    )
                ),
                name="escalation_subject_matches",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="escalation_pending_idx")]

    def __str__(self) -> str:
        where = "the service" if self.wedding_id is None else f"wedding {self.wedding_id}"
        return f"{self.get_subject_display()} in {where} ({self.status})"


class EventWebhook(models.Model):
    """A service account's subscription to one wedding's events: what a staff observer of the wedding
    sees (member-addressed events never), of ``event_types`` (all when empty), POSTed to ``url`` in
    seq order, signed with ``secret``. Its delivery state is here too: the cursor, and the one batch
    in flight with its attempts; one batch at a time is what keeps the order (decision 0032)."""

    service_account = models.ForeignKey(
        "wedsync.ServiceAccount", on_delete=models.CASCADE, related_name="event_webhooks", editable=False
    )
    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="event_webhooks")
    url = models.CharField(max_length=2000)
    event_types = models.JSONField(default=list, blank=True, help_text="Event types sent; empty: every type.")
    # The HMAC key, made by the server and shown once (on create and on rotation). Stored as it is:
    # signing needs it; the admin never shows it.
    secret = models.CharField(max_length=128, editable=False)
    is_active = models.BooleanField(default=True, help_text="Off: paused, nothing is sent.")
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The cursor: every event up to this seq was delivered (or was not for this subscription).
    last_delivered_seq = models.PositiveBigIntegerField(default=0)
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    # The batch in flight, frozen when it was read, so every attempt sends the same id and bytes.
    delivery_id = models.UUIDField(null=True, blank=True, editable=False)
    batch_upto = models.PositiveBigIntegerField(null=True, blank=True, help_text="The cursor once it is delivered.")
    batch_payload = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="HTTP attempts, all batches together.")
    run_attempts = models.PositiveIntegerField(default=0, help_text="HTTP attempts at the batch in flight.")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # When the sweep may next hand it to a worker: null at once; while a delivery task holds it, the
    # end of its lease (so a worker that died is noticed); after a failure, the backoff's end.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The one queued delivery message that may act on it (decision 0023's claim, as for escalations).
    dispatch_id = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["wedding_id", "pk"]
        indexes = [models.Index(fields=["is_active", "next_attempt_at"], name="event_webhook_due_idx")]

    def __str__(self) -> str:
        return f"Webhook {self.pk} to {self.url}"


class DeadLetterState(models.TextChoices):
    OPEN = "open", "Open"  # waiting for staff
    RETRYING = "retrying", "Retrying"  # staff asked for a retry; its run is under way
    DELIVERED = "delivered", "Delivered on retry"
    FAILED_AGAIN = "failed_again", "Failed again"  # the retry ran out too: a newer dead letter holds it


class DeadLetter(models.Model):
    """A delivery that ran out of attempts (or, for an escalation, had nowhere to go): of an
    escalation, or of an event webhook's batch (whose subscription is paused at it)."""

    escalation = models.ForeignKey(
        Escalation, on_delete=models.CASCADE, null=True, blank=True, related_name="dead_letters"
    )
    event_webhook = models.ForeignKey(
        EventWebhook, on_delete=models.CASCADE, null=True, blank=True, related_name="dead_letters"
    )
    payload = models.JSONField()
    last_error = models.TextField()
    attempts = models.PositiveIntegerField(help_text="HTTP attempts in the run that ended here.")
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=DeadLetterState.choices, default=DeadLetterState.OPEN)
    retried_at = models.DateTimeField(null=True, blank=True)
    retried_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="When the retry's outcome was known.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "created_at"], name="dead_letter_state_idx")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(escalation__isnull=False, event_webhook__isnull=True)
                    | models.Q(escalation__isnull=True, event_webhook__isnull=False)
                ),
                name="dead_letter_of_one_delivery",
            )
        ]

    def __str__(self) -> str:
        if self.escalation_id is not None:
            return f"Dead letter for escalation {self.escalation_id} ({self.state})"
        return f"Dead letter for event webhook {self.event_webhook_id} ({self.state})"


# --- Checks of the service itself (beat, monitoring/services/ops_checks.py, decision 0037) ---------------


class OpsCheck(models.TextChoices):
    DELIVERY_LATENCY = "delivery_latency", "Event delivery p99"
    PRESENCE_LATENCY = "presence_latency", "Presence propagation p99"
    ERROR_CLOSES = "error_closes", "Sockets closed 1011"
    NODE_MISSING = "node_missing", "Node missing from the registry"
    REDIS_LATENCY = "redis_latency", "Redis latency"
    DATABASE_LATENCY = "database_latency", "PostgreSQL latency"
    TASK_BACKLOG = "task_backlog", "Celery queue backlog"
    CAPACITY = "capacity", "Forecast above the fleet"  # tomorrow's or Saturday's forecast needs more nodes


class OpsSeverity(models.TextChoices):
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"  # escalated to the integrator's webhook


class OpsAlertStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class OpsCheckState(models.Model):
    """Where one check of one subject stands between beat's runs: since when it breaches (raised
    once that lasts long enough) or is healthy again (resolved once that lasts), for hysteresis."""

    kind = models.CharField(max_length=32, choices=OpsCheck.choices)
    subject = models.CharField(max_length=128, blank=True, help_text="A node's name, or empty for the whole service.")
    breaching_since = models.DateTimeField(null=True, blank=True)
    healthy_since = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True, help_text="The last value seen.")
    checked_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "subject"], name="ops_check_state_once")]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}".strip()


class OpsAlert(models.Model):
    """A check that breached for long enough: raised once, resolved once it has been healthy for
    long enough; a critical one is escalated to the integrator's webhook."""

    kind = models.CharField(max_length=32, choices=OpsCheck.choices)
    subject = models.CharField(max_length=128, blank=True, help_text="A node's name, or empty for the whole service.")
    severity = models.CharField(max_length=16, choices=OpsSeverity.choices)
    status = models.CharField(max_length=16, choices=OpsAlertStatus.choices, default=OpsAlertStatus.OPEN)
    message = models.TextField()
    value = models.FloatField(
        null=True, blank=True, help_text="The value that raised it (the last one seen while open); empty: no answer."
    )
    threshold = models.FloatField()
    raised_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=models.Q(status=OpsAlertStatus.OPEN),
                name="ops_alert_open_once",
            )
        ]
        indexes = [models.Index(fields=["status", "raised_at"], name="ops_alert_status_idx")]

    def __str__(self) -> str:
        where = f" on {self.subject}" if self.subject else ""
        return f"{self.get_kind_display()}{where} ({self.status})"
