"""Oversight of escalations: what went to the integrator's webhook, and the dead letters that did not
get there, with a retry action (monitoring/services/escalation.py does the work). A coordinator
sees those of the weddings they oversee (wedsync/admin_scope.py)."""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from monitoring.models import DeadLetter, Escalation
from monitoring.services.escalation import dead_letter_retry
from wedsync.admin_scope import WeddingScopedAdmin

_M = TypeVar("_M", bound=Model)


class _WrittenByServicesAdmin(WeddingScopedAdmin[_M]):
    """Rows are written by the escalation services only: staff look, and retry dead letters."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]


@admin.register(Escalation)
class EscalationAdmin(_WrittenByServicesAdmin[Escalation]):
    list_display = ("created_at", "subject", "wedding", "status", "attempts", "last_error", "delivered_at")
    list_filter = ("status", "subject", "created_at")
    search_fields = ("id", "wedding__name", "last_error")
    list_select_related = ("wedding",)
    date_hierarchy = "created_at"


@admin.register(DeadLetter)
class DeadLetterAdmin(_WrittenByServicesAdmin[DeadLetter]):
    wedding_path = "escalation__wedding"
    list_display = ("created_at", "escalation", "state", "attempts", "last_error", "retried_by", "resolved_at")
    list_filter = ("state", "created_at")
    search_fields = ("escalation__id", "escalation__wedding__name", "last_error")
    list_select_related = ("escalation__wedding", "retried_by")
    date_hierarchy = "created_at"
    actions = ["retry"]

    @admin.action(description="Retry delivery of the selected dead letters", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        actor = request.user if request.user.is_authenticated else None
        letters = list(queryset)
        queued = sum(dead_letter_retry(dead_letter=letter, actor=actor) for letter in letters)
        if queued:
            self.message_user(request, f"Queued {queued} for delivery; the outcome shows here.", messages.SUCCESS)
        if len(letters) > queued:
            skipped = len(letters) - queued
            self.message_user(request, f"Skipped {skipped}: only open dead letters can be retried.", messages.WARNING)
