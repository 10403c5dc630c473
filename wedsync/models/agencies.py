"""Who oversees which weddings: planning agencies, their coordinators, and one-off assignments.

A coordinator is a staff user. They oversee the weddings of every agency they belong to, plus any
wedding assigned to them by name (covering for a colleague of another agency, say). Superusers
oversee every wedding; a wedding with no agency and no assignment is theirs alone.
:func:`wedsync.selectors.weddings_overseen` is the one place that turns this into a query.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Agency(models.Model):
    name = models.CharField(max_length=200, unique=True)
    coordinators = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="agencies",
        limit_choices_to={"is_staff": True},
        help_text="Staff users who oversee every wedding of this agency.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "agencies"

    def __str__(self) -> str:
        return self.name


class CoordinatorAssignment(models.Model):
    """One wedding overseen by one coordinator outside (or regardless of) their agencies."""

    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="coordinator_assignments")
    coordinator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="wedding_assignments",
        limit_choices_to={"is_staff": True},
    )
    assigned_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=200, blank=True, help_text="Why, e.g. covering for a colleague on the day.")

    class Meta:
        ordering = ["wedding_id", "coordinator_id"]
        constraints = [
            models.UniqueConstraint(fields=["wedding", "coordinator"], name="assignment_unique_wedding_coordinator")
        ]

    def __str__(self) -> str:
        return f"{self.coordinator} oversees wedding {self.wedding_id}"
