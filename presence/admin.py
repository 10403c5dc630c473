"""Alerts and emergencies in the oversight panel, and what the wedding page shows of presence and alerts.

Acknowledging goes through :func:`presence.alerts.services.alert_acknowledge`, as it does over the
API: audited, and never a save of the whole alert (the beat task may have resolved or escalated it
since the page was loaded). Resolving an emergency goes through
:func:`presence.emergency.services.emergency_resolve` the same way, so it tells everyone too.
A coordinator sees and acts on the alerts and emergencies of the weddings they oversee only
(wedsync/admin_scope.py); each action also needs its Django permission (``change`` of the model:
acknowledging and resolving are the only changes these rows take from people).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import Model, QuerySet
from django.forms import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from presence.alerts.services import alert_acknowledge
from presence.attendance import AttendanceRules, Expectation, Place, attendance_expected, wedding_plan
from presence.emergency.services import EmergencyRefused, emergency_resolve
from presence.models import Alert, Emergency
from presence.state import MemberPresence
from wedsync.admin_scope import WeddingScopedAdmin
from wedsync.models import Wedding
from wedsync.permissions import Role
from wedsync.refusals import Refused
from wedsync.services.audit import ClientInfo

logger = structlog.get_logger(__name__)


def _acknowledge(request: HttpRequest, alert: Alert) -> bool:
    """True when this acknowledged it (False: it was already, or the user may not)."""
    already = alert.acknowledged_at is not None
    try:
        acknowledged = alert_acknowledge(
            wedding_id=alert.wedding_id, alert_id=alert.pk, user=request.user, client=ClientInfo.from_request(request)
        )
    except Refused as refused:
        messages.error(request, f"Alert {alert.pk}: {refused.message}")
        return False
    return not already and acknowledged.acknowledged_by_id == request.user.pk


class _OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("unacknowledged", "Open, not acknowledged"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "unacknowledged":
            return queryset.filter(resolved_at__isnull=True, acknowledged_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


def has_model_change_permission(request: HttpRequest, model: type[Model]) -> bool:
    """The ``change`` permission of the model itself, for an admin whose change form is read-only."""
    opts = model._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


@admin.register(Alert)
class AlertAdmin(WeddingScopedAdmin[Alert]):
    list_display = (
        "raised_at",
        "wedding",
        "kind",
        "severity",
        "member",
        "device",
        "message",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
    )
    list_filter = (_OpenFilter, "kind", "severity", "raised_at")
    search_fields = ("message", "wedding__name", "member__user__username", "member__display_name", "device")
    list_select_related = ("wedding", "member__user", "acknowledged_by")
    date_hierarchy = "raised_at"
    readonly_fields = [field.name for field in Alert._meta.fields]
    actions = ["acknowledge"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the rules raise alerts

    def has_change_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False  # acknowledge with the action; the rules resolve

    def has_delete_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False  # the record of what was raised, when, and who acknowledged it

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        return has_model_change_permission(request, Alert)

    @admin.action(description="Acknowledge selected alerts", permissions=["acknowledge"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        done = sum(_acknowledge(request, alert) for alert in queryset)
        self.message_user(request, f"Acknowledged {done} alert(s).", messages.SUCCESS)


# --- Emergencies ----------------------------------------------------------------------------------


class _EmergencyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(Emergency)
class EmergencyAdmin(WeddingScopedAdmin[Emergency]):
    list_display = (
        "raised_at",
        "wedding",
        "raised_by",
        "message",
        "location",
        "repeats",
        "repeated_at",
        "resolved_at",
        "resolved_by",
    )
    list_filter = (_EmergencyStateFilter, "raised_at")
    search_fields = ("wedding__name", "raised_by__user__username", "raised_by__display_name")
    list_select_related = ("wedding", "raised_by__user", "raised_event", "resolved_by")
    date_hierarchy = "raised_at"
    readonly_fields = [field.name for field in Emergency._meta.fields]
    actions = ["resolve"]

    @admin.display(description="message")
    def message(self, emergency: Emergency) -> str:
        return str(emergency.raised_event.data.get("message", ""))

    @admin.display(description="location")
    def location(self, emergency: Emergency) -> str:
        return str(emergency.raised_event.data.get("location") or "-")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # an emergency.alert opens one

    def has_change_permission(self, request: HttpRequest, obj: Emergency | None = None) -> bool:
        return False  # resolve with the action, which tells everyone

    def has_delete_permission(self, request: HttpRequest, obj: Emergency | None = None) -> bool:
        return False  # the record of what happened, and the escalation webhook reads it

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return has_model_change_permission(request, Emergency)

    @admin.action(description="Resolve selected emergencies (tells everyone in the wedding)", permissions=["resolve"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Emergency]) -> None:
        done = 0
        for emergency in queryset:
            already = emergency.resolved_at is not None
            try:
                resolved = emergency_resolve(
                    wedding_id=emergency.wedding_id,
                    emergency_id=emergency.pk,
                    user=request.user,
                    client=ClientInfo.from_request(request),
                )
            except EmergencyRefused as refused:
                messages.error(request, f"Emergency {emergency.pk}: {refused.message}")
                continue
            done += not already and resolved.resolved_by_id == request.user.pk
        self.message_user(request, f"Resolved {done} emergency(ies).", messages.SUCCESS)


# --- The wedding page -------------------------------------------------------------------------------


class _AcknowledgeForm(forms.ModelForm[Alert]):
    acknowledge = forms.BooleanField(required=False, help_text="Tick and save to acknowledge.")

    class Meta:
        model = Alert
        fields: tuple[str, ...] = ()


class _AcknowledgingFormSet(BaseInlineFormSet[Alert, Wedding, forms.ModelForm[Alert]]):
    request: HttpRequest

    def save_existing(self, form: forms.ModelForm[Alert], obj: Alert, commit: bool = True) -> Alert:
        # Never save the alert itself: only the acknowledgement, through the service.
        if form.cleaned_data.get("acknowledge"):
            _acknowledge(self.request, obj)
        return obj


class OpenAlertInline(admin.TabularInline[Alert, Wedding]):
    """The wedding's open alerts, each with an acknowledge box."""

    model = Alert
    form = _AcknowledgeForm
    formset = _AcknowledgingFormSet
    verbose_name = "open alert"
    verbose_name_plural = "Open alerts"
    extra = 0
    can_delete = False
    fields = ("kind", "severity", "member", "message", "raised_at", "notified_at", "acknowledged_at", "acknowledge")
    readonly_fields = ("kind", "severity", "member", "message", "raised_at", "notified_at", "acknowledged_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alert]:
        alerts = super().get_queryset(request).select_related("member__user")
        # A form posted for an alert that resolved since the page loaded must still find it.
        return alerts if request.method == "POST" else alerts.filter(resolved_at__isnull=True)

    def get_formset(self, request: HttpRequest, obj: Wedding | None = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        return type("AcknowledgingFormSet", (formset,), {"request": request})

    def has_add_permission(self, request: HttpRequest, obj: Wedding | None = None) -> bool:
        return False


def _last_seen(presence: MemberPresence | None, wedding: Wedding) -> str:
    if presence is None:
        return "-"
    return datetime.fromtimestamp(presence.last_seen, tz=UTC).astimezone(wedding.tz).strftime("%H:%M:%S")


def _battery(presence: MemberPresence | None) -> str:
    if presence is None or presence.battery is None:
        return "-"
    return f"{presence.battery} %" + (" (charging)" if presence.charging else "")


def _expected(expectations: list[Expectation], wedding: Wedding) -> str:
    if not expectations:
        return "-"
    first = expectations[0]
    if first.place is Place.ONLINE:
        return "online all day"
    return f"at the venue from {first.starts_at.astimezone(wedding.tz):%H:%M}"


def _presence_members(wedding_id: int) -> dict[int, MemberPresence] | None:
    from presence.selectors import presence_members

    try:
        return presence_members(wedding_id=wedding_id)
    except Exception:  # the page must render when Redis does not answer; say so instead
        logger.exception("admin.presence_unavailable", wedding=wedding_id)
        return None


def wedding_presence_html(wedding: Wedding) -> SafeString:
    """Who is online, where, battery and last seen, next to who is expected: one table for the
    wedding page, from the presence store and three queries (guests as a count)."""
    plan = wedding_plan(wedding_id=wedding.pk) if wedding.pk else None
    if plan is None:
        return format_html("{}", "-")
    online = _presence_members(wedding.pk)
    if online is None:
        return format_html("<p>{}</p>", "Presence is unavailable: the presence store did not answer.")
    expected: dict[int, list[Expectation]] = {}
    for expectation in attendance_expected(plan=plan, rules=AttendanceRules.from_settings()):
        expected.setdefault(expectation.member_id, []).append(expectation)
    rows = []
    for member in sorted(plan.members, key=lambda m: (m.role, m.name)):
        if member.role == Role.GUEST:
            continue
        presence = online.get(member.id)
        rows.append(
            (
                member.name,
                member.role,
                presence.status.value if presence else "offline",
                (presence.location or "-") if presence else "-",
                (presence.activity or "-") if presence else "-",
                _battery(presence),
                presence.devices if presence else 0,
                presence.quality.value if presence else "-",
                _last_seen(presence, wedding),
                _expected(expected.get(member.id, []), wedding),
            )
        )
    guests = sum(1 for presence in online.values() if presence.role == Role.GUEST and presence.is_online)
    header = (
        "Member",
        "Role",
        "Status",
        "Where",
        "Activity",
        "Battery",
        "Devices",
        "Connection",
        f"Last seen ({wedding.time_zone})",
        "Expected",
    )
    return format_html(
        '<table class="wedsync-presence"><thead><tr>{}</tr></thead><tbody>{}</tbody></table><p>{}</p>',
        format_html_join("", "<th>{}</th>", ((title,) for title in header)),
        format_html_join("", "<tr>" + "<td>{}</td>" * len(header) + "</tr>", rows),
        f"Guests online: {guests}",
    )
