"""Oversight of escalations: what went to the integrator's webhook; integrators' event webhook
subscriptions, their delivery state, with pause and resume actions; and the dead letters that did
not get there, with a retry action (monitoring/services/ do the work). A coordinator sees those of
the weddings they oversee (wedsync/admin_scope.py)."""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from monitoring.models import DeadLetter, Escalation, EventWebhook, OpsAlert
from monitoring.services.escalation import dead_letter_retry
from monitoring.services.event_webhooks.subscriptions import (
    event_webhook_dead_letter_retry,
    event_webhook_pause,
    event_webhook_resume,
)
from wedsync.admin_scope import WeddingScopedAdmin
from wedsync.selectors import weddings_overseen_condition
from wedsync.services.audit import ClientInfo

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


@admin.register(EventWebhook)
class EventWebhookAdmin(_WrittenByServicesAdmin[EventWebhook]):
    """Integrators' subscriptions (made over the API by their keys): whether each is delivering or
    paused and why, how far it got, and the batch it is stuck at. The secret is never shown."""

    list_display = (
        "id",
        "wedding",
        "service_account",
        "url",
        "is_active",
        "pause_reason",
        "last_delivered_seq",
        "last_delivered_at",
        "run_attempts",
        "last_error",
    )
    list_filter = ("is_active", "created_at")
    search_fields = ("url", "wedding__name", "service_account__name")
    list_select_related = ("wedding", "service_account")
    exclude = ("secret",)
    actions = ["pause", "resume"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [name for name in super().get_readonly_fields(request, obj) if name != "secret"]

    @admin.action(description="Pause the selected subscriptions", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[EventWebhook]) -> None:
        client = ClientInfo.from_request(request)
        paused = sum(
            event_webhook_pause(webhook_id=webhook.pk, actor=_staff(request), client=client) for webhook in queryset
        )
        self.message_user(request, f"Paused {paused}; nothing more is sent to them until resumed.", messages.SUCCESS)

    @admin.action(description="Resume the selected subscriptions where they stopped", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[EventWebhook]) -> None:
        client = ClientInfo.from_request(request)
        resumed = sum(
            event_webhook_resume(webhook_id=webhook.pk, actor=_staff(request), client=client) for webhook in queryset
        )
        self.message_user(request, f"Resumed {resumed}; delivery goes on at the next sweep.", messages.SUCCESS)


def _staff(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # the admin's views are for signed-in staff only
        raise TypeError("an admin request without a signed-in user")
    return user


@admin.register(DeadLetter)
class DeadLetterAdmin(_WrittenByServicesAdmin[DeadLetter]):
    """Dead letters of escalations and of event webhooks' batches: a dead letter belongs to the
    wedding of whichever it holds."""

    list_display = (
        "created_at",
        "wedding",
        "escalation",
        "event_webhook",
        "state",
        "attempts",
        "last_error",
        "retried_by",
        "resolved_at",
    )
    list_filter = ("state", "created_at")
    search_fields = ("escalation__id", "escalation__wedding__name", "event_webhook__wedding__name", "last_error")
    list_select_related = ("escalation__wedding", "event_webhook__wedding", "retried_by")
    date_hierarchy = "created_at"
    actions = ["retry"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        # Either of two paths leads to the wedding: WeddingScopedAdmin's one-path filter would drop
        # the other kind, so the scope is applied here, through both.
        user = request.user
        condition = weddings_overseen_condition(
            user=user, wedding_path="escalation__wedding"
        ) | weddings_overseen_condition(user=user, wedding_path="event_webhook__wedding")
        return admin.ModelAdmin.get_queryset(self, request).filter(condition)

    def wedding_id_of(self, obj: DeadLetter) -> int | None:
        held = obj.escalation if obj.escalation_id is not None else obj.event_webhook
        return held.wedding_id if held is not None else None

    @admin.display(description="wedding")
    def wedding(self, obj: DeadLetter) -> str:
        held = obj.escalation if obj.escalation_id is not None else obj.event_webhook
        if held is None:
            return ""
        return "the service (an operations alert)" if held.wedding is None else str(held.wedding)

    @admin.action(description="Retry delivery of the selected dead letters", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        actor = request.user if request.user.is_authenticated else None
        letters = list(queryset)
        queued = sum(
            dead_letter_retry(dead_letter=letter, actor=actor)
            if letter.escalation_id is not None
            else event_webhook_dead_letter_retry(dead_letter=letter, actor=actor)
            for letter in letters
        )
        if queued:
            self.message_user(request, f"Queued {queued} for delivery; the outcome shows here.", messages.SUCCESS)
        if len(letters) > queued:
            skipped = len(letters) - queued
            self.message_user(request, f"Skipped {skipped}: only open dead letters can be retried.", messages.WARNING)


@admin.register(OpsAlert)
class OpsAlertAdmin(admin.ModelAdmin[OpsAlert]):
    """Beat's alerts about the service itself (docs/operations.md "Checks in beat"): superusers
    look; beat raises and resolves them, so nothing here is edited."""

    list_display = (
        "raised_at",
        "kind",
        "subject",
        "severity",
        "status",
        "value",
        "threshold",
        "message",
        "resolved_at",
    )
    list_filter = ("status", "severity", "kind")
    search_fields = ("subject", "message")
    date_hierarchy = "raised_at"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
