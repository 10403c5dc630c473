"""Escalations: what nobody acknowledged in time, sent to the integrator's webhook, and what could
not be delivered (dead letters, for staff to retry). See docs/decisions/0010-escalation-webhook.md.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class EscalationSubject(models.TextChoices):
    ALERT = "alert", "Critical alert"
    EMERGENCY = "emergency", "Emergency"


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
    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="escalations")
    subject = models.CharField(max_length=16, choices=EscalationSubject.choices)
    # One escalation per subject: the unique constraints below settle two beat workers racing.
    alert = models.ForeignKey("presence.Alert", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    event = models.ForeignKey("realtime.Event", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
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
            models.CheckConstraint(
                condition=(
                    models.Q(subject=EscalationSubject.ALERT, event__isnull=True)
                    | models.Q(subject=EscalationSubject.EMERGENCY, alert__isnull=True)
                ),
                name="escalation_subject_matches",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="escalation_pending_idx")]

    def __str__(self) -> str:
        return f"{self.get_subject_display()} in wedding {self.wedding_id} ({self.status})"


class DeadLetterState(models.TextChoices):
    OPEN = "open", "Open"  # waiting for staff
    RETRYING = "retrying", "Retrying"  # staff asked for a retry; its run is under way
    DELIVERED = "delivered", "Delivered on retry"
    FAILED_AGAIN = "failed_again", "Failed again"  # the retry ran out too: a newer dead letter holds it


class DeadLetter(models.Model):
    """An escalation whose delivery ran out of attempts (or that had nowhere to go)."""

    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="dead_letters")
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

    def __str__(self) -> str:
        return f"Dead letter for escalation {self.escalation_id} ({self.state})"
