"""The coordinators' oversight panel for the core domain.

Member edits go through :func:`wedsync.services.members.member_save`, so a role change made here
revokes tokens and is audited exactly like one made anywhere else. The audit log is read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest

from presence.admin import OpenAlertInline, wedding_presence_html
from wedsync.models import AuditLog, Member, Rsvp, Task, TimelineItem, UserTokenGeneration, Wedding
from wedsync.services.audit import ClientInfo
from wedsync.services.members import member_remove, member_save
from wedsync.services.records import record_save
from wedsync.services.weddings import wedding_delete


def _save_member(request: HttpRequest, member: Member) -> None:
    member_save(member=member, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]


class MemberInline(admin.TabularInline[Member, Wedding]):
    model = Member
    extra = 0
    fields = ("user", "role", "display_name", "vendor_company", "vendor_contact", "is_key_person", "is_active")
    autocomplete_fields = ("user",)
    show_change_link = True


@admin.register(Wedding)
class WeddingAdmin(admin.ModelAdmin[Wedding]):
    list_display = ("name", "date", "ceremony_at", "time_zone", "venue_name", "status", "member_count")
    list_filter = ("status", "date", "time_zone")
    search_fields = ("name", "slug", "venue_name", "venue_address")
    date_hierarchy = "date"
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MemberInline, OpenAlertInline]
    readonly_fields = ("live_presence",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Wedding]:
        from django.db.models import Count

        return super().get_queryset(request).annotate(_member_count=Count("members"))

    def delete_model(self, request: HttpRequest, obj: Wedding) -> None:
        wedding_delete(wedding=obj, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Wedding]) -> None:
        for wedding in queryset:
            self.delete_model(request, wedding)

    @admin.display(description="Members", ordering="_member_count")
    def member_count(self, wedding: Wedding) -> int:
        return int(getattr(wedding, "_member_count", 0))

    @admin.display(description="Who is here now")
    def live_presence(self, wedding: Wedding) -> str:
        return wedding_presence_html(wedding)

    def save_formset(
        self, request: HttpRequest, form: ModelForm[Wedding], formset: BaseInlineFormSet[Any, Any, Any], change: bool
    ) -> None:
        if formset.model is not Member:
            super().save_formset(request, form, formset, change)
            return
        members = formset.save(commit=False)
        for member in members:
            _save_member(request, member)
        for removed in formset.deleted_objects:
            member_remove(member=removed, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]
        formset.save_m2m()


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin[Member]):
    list_display = ("__str__", "wedding", "role", "user", "vendor_company", "is_key_person", "is_active", "joined_at")
    list_filter = ("role", "is_key_person", "is_active", "wedding__date")
    search_fields = (
        "user__username",
        "user__first_name",
        "user__last_name",
        "display_name",
        "vendor_company",
        "wedding__name",
    )
    list_select_related = ("wedding", "user")
    autocomplete_fields = ("user", "wedding")

    def save_model(self, request: HttpRequest, obj: Member, form: ModelForm[Member], change: bool) -> None:
        _save_member(request, obj)

    def delete_model(self, request: HttpRequest, obj: Member) -> None:
        member_remove(member=obj, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Member]) -> None:
        for member in queryset:
            self.delete_model(request, member)


class _RecordAdmin(admin.ModelAdmin[Any]):
    """Record edits go through record_save: version bumped, change audited."""

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool) -> None:
        record_save(record=obj, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]


class TimelineItemForm(ModelForm[TimelineItem]):
    class Meta:
        model = TimelineItem
        fields = ("wedding", "title", "starts_at", "ends_at", "location", "assigned_vendors", "notes")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        wedding, vendors = cleaned.get("wedding"), cleaned.get("assigned_vendors") or []
        strangers = [vendor for vendor in vendors if wedding is not None and vendor.wedding_id != wedding.pk]
        if strangers:
            raise ValidationError({"assigned_vendors": f"{strangers[0]} is not a member of {wedding}."})
        return cleaned


@admin.register(TimelineItem)
class TimelineItemAdmin(_RecordAdmin):
    form = TimelineItemForm
    list_display = ("title", "wedding", "starts_at", "ends_at", "location", "version")
    list_filter = ("location", "wedding__date")
    search_fields = ("title", "notes", "wedding__name")
    list_select_related = ("wedding",)
    filter_horizontal = ("assigned_vendors",)
    readonly_fields = ("version", "updated_at")


@admin.register(Task)
class TaskAdmin(_RecordAdmin):
    list_display = ("title", "wedding", "assignee", "status", "due", "version")
    list_filter = ("status", "wedding__date")
    search_fields = ("title", "wedding__name", "assignee__user__username")
    list_select_related = ("wedding", "assignee__user")
    readonly_fields = ("version", "updated_at")


@admin.register(Rsvp)
class RsvpAdmin(_RecordAdmin):
    list_display = ("guest", "status", "meal", "plus_ones", "version")
    list_filter = ("status", "guest__wedding__date")
    search_fields = ("guest__user__username", "guest__display_name", "meal", "dietary_notes")
    list_select_related = ("guest__user", "guest__wedding")
    readonly_fields = ("version", "updated_at")


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin[AuditLog]):
    list_display = ("at", "action", "outcome", "actor_label", "wedding_id", "target", "ip")
    list_filter = ("outcome", "action", "at")
    search_fields = ("actor_label", "target", "action", "ip")
    date_hierarchy = "at"
    readonly_fields = [field.name for field in AuditLog._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False


@admin.register(UserTokenGeneration)
class UserTokenGenerationAdmin(admin.ModelAdmin[UserTokenGeneration]):
    list_display = ("user", "generation", "reason", "changed_at")
    search_fields = ("user__username",)
    readonly_fields = ("user", "generation", "reason", "changed_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
