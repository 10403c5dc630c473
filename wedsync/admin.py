"""The coordinators' oversight panel for the core domain.

Member edits go through :func:`wedsync.services.members.member_save`, so a role change made here
revokes tokens and is audited exactly like one made anywhere else. Timeline items, tasks and RSVPs
are saved and deleted by the sync engine (:mod:`records.admin_edits`), so an admin's edit conflicts
and notifies like a member's. The audit log is read-only.
A coordinator sees the weddings they oversee and what belongs to them, superusers everything
(:mod:`wedsync.admin_scope`, docs/decisions/0022); agencies and assignments are the superusers'.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from presence.admin import OpenAlertInline, wedding_presence_html
from records.admin import WeddingStrategyInline, strategies_formset_save
from records.admin_edits import RecordEditAdmin, RecordEditForm
from records.models import RecordKindName, WeddingStrategy
from wedsync import admin_service_accounts  # noqa: F401  registers the service accounts' pages
from wedsync.admin_scope import (
    OverseenChoices,
    ScopedAdmin,
    SuperuserOnlyAdmin,
    SuperuserOnlyInline,
    WeddingScopedAdmin,
    is_superuser_request,
)
from wedsync.models import (
    Agency,
    AuditLog,
    CoordinatorAssignment,
    Member,
    Rsvp,
    Task,
    TimelineItem,
    UserTokenGeneration,
    Wedding,
)
from wedsync.selectors import users_overseen
from wedsync.services.audit import ClientInfo
from wedsync.services.auth import tokens_revoke_for_user
from wedsync.services.members import member_remove, member_save
from wedsync.services.weddings import wedding_delete


def _save_member(request: HttpRequest, member: Member) -> None:
    member_save(member=member, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]


class MemberInline(OverseenChoices[Member], admin.TabularInline[Member, Wedding]):
    model = Member
    extra = 0
    fields = ("user", "role", "display_name", "vendor_company", "vendor_contact", "is_key_person", "is_active")
    autocomplete_fields = ("user",)
    show_change_link = True


class CoordinatorAssignmentInline(SuperuserOnlyInline[CoordinatorAssignment, Wedding]):
    model = CoordinatorAssignment
    extra = 0
    fields = ("coordinator", "note", "assigned_at")
    readonly_fields = ("assigned_at",)
    autocomplete_fields = ("coordinator",)
    verbose_name = "coordinator assigned outside the agency"
    verbose_name_plural = "Coordinators assigned outside the agency"


@admin.register(Wedding)
class WeddingAdmin(WeddingScopedAdmin[Wedding]):
    wedding_path = "pk"
    list_display = ("name", "date", "ceremony_at", "time_zone", "venue_name", "agency", "status", "member_count")
    # Only the agencies of the listed weddings: a coordinator does not learn the others' names.
    list_filter = ("status", "date", "time_zone", ("agency", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("agency",)
    search_fields = ("name", "slug", "venue_name", "venue_address")
    date_hierarchy = "date"
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MemberInline, CoordinatorAssignmentInline, OpenAlertInline, WeddingStrategyInline]
    readonly_fields = ("live_presence",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Wedding]:
        # The count groups the rows, and a grouped query drops the model's default ordering: say
        # it again, or the autocomplete's pages have none.
        weddings = super().get_queryset(request).annotate(_member_count=Count("members"))
        return weddings.order_by("date", "id")  # Wedding.Meta.ordering

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A coordinator's new wedding must land in one of their agencies, so they need one.
        return super().has_add_permission(request) and (
            is_superuser_request(request) or Agency.objects.filter(coordinators=request.user.pk).exists()
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Wedding | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not is_superuser_request(request):
            fields.append("agency")  # moving a wedding between agencies is a superuser's call
        return fields

    def get_form(
        self, request: HttpRequest, obj: Wedding | None = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm[Wedding]]:
        form = super().get_form(request, obj, change, **kwargs)
        if obj is None and not is_superuser_request(request) and "agency" in form.base_fields:
            form.base_fields["agency"].required = True  # an agency-less wedding is out of their sight
        return form

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
        if not wedding.pk:  # the add form
            return wedding_presence_html(wedding)
        # Kept live by wedsync/admin_presence.js over a staff observer socket (decision 0029).
        return format_html(
            '<div id="live-presence" data-wedding="{}" data-url="{}" data-socket="/ws/v1/?observe=1" data-ticket="{}">'
            '<p class="live-presence-status" role="status" aria-live="polite">Live updates are starting…</p>'
            '<div class="live-presence-table">{}</div></div>',
            wedding.pk,
            reverse("board-presence", kwargs={"wedding_id": wedding.pk}),
            reverse("realtime-ticket"),
            wedding_presence_html(wedding),
        )

    @property
    def media(self) -> forms.Media:
        return super().media + forms.Media(js=[forms.Script("wedsync/admin_presence.js", type="module")])  # type: ignore[list-item]  # the stubs predate Script

    def save_formset(
        self, request: HttpRequest, form: ModelForm[Wedding], formset: BaseInlineFormSet[Any, Any, Any], change: bool
    ) -> None:
        if formset.model is WeddingStrategy:
            strategies_formset_save(request, formset)
            return
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
class MemberAdmin(WeddingScopedAdmin[Member]):
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


class TimelineItemForm(RecordEditForm):
    class Meta:
        model = TimelineItem
        fields = ("wedding", "title", "starts_at", "ends_at", "location", "assigned_vendors", "notes", "ceremony_notes")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        wedding = cleaned.get("wedding") or (self.instance.wedding if self.instance.wedding_id else None)
        vendors = cleaned.get("assigned_vendors") or []
        strangers = [vendor for vendor in vendors if wedding is not None and vendor.wedding_id != wedding.pk]
        if strangers:
            raise ValidationError({"assigned_vendors": f"{strangers[0]} is not a member of {wedding}."})
        return cleaned


@admin.register(TimelineItem)
class TimelineItemAdmin(RecordEditAdmin):
    form = TimelineItemForm
    record_kind_name = RecordKindName.TIMELINE_ITEM
    blank_is_none = frozenset({"location"})
    list_display = ("title", "wedding", "starts_at", "ends_at", "location", "version")
    list_filter = ("location", "wedding__date")
    search_fields = ("title", "notes", "wedding__name")
    list_select_related = ("wedding",)
    filter_horizontal = ("assigned_vendors",)
    readonly_fields = ("version", "updated_at")


@admin.register(Task)
class TaskAdmin(RecordEditAdmin):
    record_kind_name = RecordKindName.TASK
    list_display = ("title", "wedding", "assignee", "status", "due", "version")
    list_filter = ("status", "wedding__date")
    search_fields = ("title", "wedding__name", "assignee__user__username")
    list_select_related = ("wedding", "assignee__user")
    readonly_fields = ("version", "updated_at")


@admin.register(Rsvp)
class RsvpAdmin(RecordEditAdmin):
    record_kind_name = RecordKindName.RSVP
    wedding_path = "guest__wedding"
    owner_field = "guest"
    list_display = ("guest", "status", "meal", "plus_ones", "version")
    list_filter = ("status", "guest__wedding__date")
    search_fields = ("guest__user__username", "guest__display_name", "meal", "dietary_notes")
    list_select_related = ("guest__user", "guest__wedding")
    readonly_fields = ("version", "updated_at")


@admin.register(AuditLog)
class AuditLogAdmin(WeddingScopedAdmin[AuditLog]):
    """A coordinator reads the entries of the weddings they oversee; entries of no wedding (logins,
    tokens) are the superusers'."""

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
class UserTokenGenerationAdmin(SuperuserOnlyAdmin[UserTokenGeneration]):
    list_display = ("user", "generation", "reason", "changed_at")
    search_fields = ("user__username",)
    readonly_fields = ("user", "generation", "reason", "changed_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Agency)
class AgencyAdmin(SuperuserOnlyAdmin[Agency]):
    list_display = ("name", "coordinator_count", "wedding_count", "created_at")
    search_fields = ("name",)
    filter_horizontal = ("coordinators",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agency]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _coordinators=Count("coordinators", distinct=True),
                _weddings=Count("weddings", distinct=True),
            )
        )

    @admin.display(description="Coordinators", ordering="_coordinators")
    def coordinator_count(self, agency: Agency) -> int:
        return int(getattr(agency, "_coordinators", 0))

    @admin.display(description="Weddings", ordering="_weddings")
    def wedding_count(self, agency: Agency) -> int:
        return int(getattr(agency, "_weddings", 0))


# Django's account admin, narrowed: a coordinator looks up the people of their weddings (to add a
# member) and never edits anyone's staff or superuser flags, groups or permissions.
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class ScopedUserAdmin(ScopedAdmin[User], UserAdmin[User]):
    _PRIVILEGES = ("is_staff", "is_superuser", "groups", "user_permissions")
    actions = ["log_out_everywhere"]

    @admin.action(description="Log out everywhere (tokens, sockets, browser sessions)", permissions=["change"])
    def log_out_everywhere(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        client = ClientInfo.from_request(request)
        for user in queryset:
            tokens_revoke_for_user(user_id=user.pk, reason="admin_logout", actor=request.user, client=client)  # type: ignore[arg-type]
        self.message_user(request, f"Logged out everywhere: {queryset.count()} account(s).", messages.SUCCESS)

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        users = super().get_queryset(request)
        if is_superuser_request(request):
            return users
        return users.filter(pk__in=users_overseen(user=request.user).values("pk"))

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not is_superuser_request(request):
            fields.extend(self._PRIVILEGES)
        return fields
