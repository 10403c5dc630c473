from __future__ import annotations

import zoneinfo
from datetime import date as date_type
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from wedsync.permissions import ROLE_CHOICES, Role


@cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    if value not in _known_time_zones():
        raise ValidationError(f"{value!r} is not an IANA time zone (for example Europe/Lisbon)")


class WeddingStatus(models.TextChoices):
    PLANNING = "planning", "Planning"
    CONFIRMED = "confirmed", "Confirmed"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class Wedding(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(
        max_length=100, unique=True, help_text="Stable identifier used by imports and the demo seed."
    )
    date = models.DateField(help_text="The wedding day, in the wedding's own time zone.")
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    venue_name = models.CharField(max_length=200, blank=True)
    venue_address = models.TextField(blank=True)
    ceremony_at = models.DateTimeField(help_text="Ceremony start (stored in UTC).")
    status = models.CharField(max_length=16, choices=WeddingStatus.choices, default=WeddingStatus.PLANNING)
    # PROTECT: deleting an agency would silently take its weddings out of every coordinator's sight.
    agency = models.ForeignKey(
        "wedsync.Agency",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="weddings",
        help_text="The planning agency whose coordinators oversee this wedding; none: superusers only.",
    )
    # Archived weddings leave the API's lists unless asked for; nothing in them is deleted.
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["date", "id"]
        indexes = [models.Index(fields=["date"], name="wedding_date_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.date:%Y-%m-%d})"

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def clean(self) -> None:
        if self.ceremony_at and self.date and self.time_zone in _known_time_zones():
            try:
                local_day: date_type = self.ceremony_at.astimezone(self.tz).date()
            except (OverflowError, ValueError):  # past the calendar's end in that zone
                raise ValidationError({"ceremony_at": "The ceremony is outside the calendar."}) from None
            if local_day != self.date:
                raise ValidationError(
                    {"ceremony_at": f"The ceremony falls on {local_day} in {self.time_zone}, not on the wedding date."}
                )


class Member(models.Model):
    """A user's place in one wedding. A user may belong to several weddings with different roles."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    wedding = models.ForeignKey(Wedding, on_delete=models.CASCADE, related_name="members")
    role = models.CharField(max_length=16, choices=ROLE_CHOICES)
    display_name = models.CharField(
        max_length=150, blank=True, help_text="Shown to other members; defaults to the user's name."
    )
    vendor_company = models.CharField(max_length=200, blank=True)
    vendor_contact = models.CharField(max_length=200, blank=True, help_text="Phone or e-mail for the day.")
    is_key_person = models.BooleanField(default=False, help_text="Missing before the ceremony raises an alert.")
    is_active = models.BooleanField(default=True)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["wedding_id", "role", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "wedding"], name="member_unique_user_wedding"),
            models.CheckConstraint(
                condition=models.Q(role__in=[role.value for role in Role]), name="member_role_known"
            ),
        ]
        indexes = [models.Index(fields=["wedding", "role"], name="member_wedding_role_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.role}, wedding {self.wedding_id})"

    @property
    def name(self) -> str:
        if self.display_name:
            return self.display_name
        full_name: str = self.user.get_full_name()
        return full_name or self.user.get_username()

    @property
    def is_vendor(self) -> bool:
        return Role(self.role).is_vendor

    def clean(self) -> None:
        if self.role not in Role.__members__.values():
            return  # the field's own choices validation reports it
        if not Role(self.role).is_vendor and (self.vendor_company or self.vendor_contact):
            raise ValidationError({"vendor_company": "Only vendor members carry vendor details."})
