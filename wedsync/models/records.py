"""Shared records several members edit at once; each carries a ``version`` for optimistic sync."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from wedsync.models.weddings import Member, Wedding
from wedsync.permissions import VENDOR_ROLES, Role


class LocationZone(models.TextChoices):
    """The zones of PROTOCOL.md section 6, shared by presence and the timeline."""

    OFF_SITE = "off_site", "Off site"
    PARKING = "parking", "Parking"
    GETTING_READY = "getting_ready", "Getting ready"
    BRIDAL_SUITE = "bridal_suite", "Bridal suite"
    CEREMONY_AREA = "ceremony_area", "Ceremony area"
    COCKTAIL_AREA = "cocktail_area", "Cocktail area"
    RECEPTION_HALL = "reception_hall", "Reception hall"
    PHOTO_LOCATION = "photo_location", "Photo location"
    VENDOR_STAGING = "vendor_staging", "Vendor staging"


class TimelineItem(models.Model):
    wedding = models.ForeignKey(Wedding, on_delete=models.CASCADE, related_name="timeline_items")
    title = models.CharField(max_length=200)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    location = models.CharField(max_length=32, choices=LocationZone.choices, blank=True)
    assigned_vendors = models.ManyToManyField(
        Member,
        blank=True,
        related_name="timeline_items",
        limit_choices_to={"role__in": sorted(role.value for role in VENDOR_ROLES)},
    )
    notes = models.TextField(blank=True)
    ceremony_notes = models.TextField(
        blank=True, help_text="Ceremony details (vows order, cues): only roles with view_ceremony_details see them."
    )
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["wedding_id", "starts_at", "id"]
        indexes = [models.Index(fields=["wedding", "starts_at"], name="timeline_wedding_start_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__isnull=True) | models.Q(ends_at__gte=models.F("starts_at")),
                name="timeline_ends_after_start",
            )
        ]

    def __str__(self) -> str:
        return f"{self.starts_at:%H:%M} {self.title}"


class TaskStatus(models.TextChoices):
    TODO = "todo", "To do"
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"
    BLOCKED = "blocked", "Blocked"


class Task(models.Model):
    wedding = models.ForeignKey(Wedding, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200)
    assignee = models.ForeignKey(Member, on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks")
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.TODO)
    due = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["wedding_id", "due", "id"]
        indexes = [models.Index(fields=["wedding", "status"], name="task_wedding_status_idx")]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        if self.assignee_id and self.assignee and self.assignee.wedding_id != self.wedding_id:
            raise ValidationError({"assignee": "The assignee must be a member of the same wedding."})


class RsvpStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ATTENDING = "attending", "Attending"
    DECLINED = "declined", "Declined"
    MAYBE = "maybe", "Maybe"


class Rsvp(models.Model):
    guest = models.OneToOneField(
        Member, on_delete=models.CASCADE, related_name="rsvp", limit_choices_to={"role": Role.GUEST.value}
    )
    status = models.CharField(max_length=16, choices=RsvpStatus.choices, default=RsvpStatus.PENDING)
    meal = models.CharField(max_length=100, blank=True)
    plus_ones = models.PositiveSmallIntegerField(default=0)
    dietary_notes = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["guest_id"]
        verbose_name = "RSVP"

    def __str__(self) -> str:
        return f"RSVP of {self.guest} ({self.status})"

    def clean(self) -> None:
        if self.guest_id and self.guest.role != Role.GUEST:
            raise ValidationError({"guest": "Only guest members have an RSVP."})
