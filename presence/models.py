"""Wedding-day alerts: raised by the beat rules (presence/alerts), acknowledged by staff, resolved
when their condition clears. Presence itself is not here: it lives in Redis (presence/store.py)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AlertKind(models.TextChoices):
    KEY_PERSON_MISSING = "key_person_missing", "Key person missing"
    VENUE_CONTACT_OFFLINE = "venue_contact_offline", "Venue contact offline"
    LOW_BATTERY = "low_battery", "Low battery"


class AlertSeverity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Alert(models.Model):
    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    severity = models.CharField(max_length=16, choices=AlertSeverity.choices)
    member = models.ForeignKey("wedsync.Member", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    # The device concerned (low_battery is per device); empty for alerts about a member or a wedding.
    device = models.CharField(max_length=64, blank=True, default="")
    message = models.CharField(max_length=500)
    # The alert.raised event that told planner, couple and member; a planner's ``ack`` of it counts
    # as acknowledging the alert.
    raised_event = models.ForeignKey(
        "realtime.Event", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    raised_at = models.DateTimeField(default=timezone.now)
    # When planner, couple and the member concerned were last told (alert.raised, re-notifications).
    notified_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        indexes = [models.Index(fields=["wedding", "resolved_at"], name="alert_wedding_open_idx")]
        constraints = [
            # Never two open alerts of one kind for the same member (and device): the rules may run
            # on several beat workers at once, and the database is what settles the race.
            models.UniqueConstraint(
                fields=["wedding", "kind", "member", "device"],
                condition=models.Q(resolved_at__isnull=True),
                nulls_distinct=False,
                name="alert_one_open_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.severity}) in wedding {self.wedding_id}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class Emergency(models.Model):
    """An ``emergency.alert`` while it is open: the wedding runs in emergency mode (wider location
    sharing and publishing, faster re-notifications) until a planner resolves it."""

    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="emergencies")
    raised_event = models.OneToOneField("realtime.Event", on_delete=models.CASCADE, related_name="+")
    raised_by = models.ForeignKey("wedsync.Member", on_delete=models.SET_NULL, null=True, related_name="+")
    raised_at = models.DateTimeField(default=timezone.now)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    # The same member's further alarms while it is open update it instead of opening their own
    # (decision 0011): how many came, and when the last one did.
    repeats = models.PositiveIntegerField(default=0)
    repeated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        indexes = [models.Index(fields=["wedding", "resolved_at"], name="emergency_wedding_open_idx")]
        verbose_name_plural = "emergencies"

    def __str__(self) -> str:
        state = "open" if self.resolved_at is None else "resolved"
        return f"Emergency in wedding {self.wedding_id} ({state})"
