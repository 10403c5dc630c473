"""The conflict inbox and each wedding's strategies in the oversight panel (docs/decisions/0027).

A conflict is resolved through :func:`records.services.conflict_resolve`, as over the API: keep the
record (theirs), apply the submitted edit (mine) or apply merged values the coordinator writes,
and everyone concerned hears ``conflict.resolved``. A conflict is never edited or deleted as a row.
A coordinator sees and resolves the conflicts of the weddings they oversee only
(wedsync/admin_scope.py), with the ``change`` permission on conflicts. Strategy choices are saved
through :mod:`records.oversight`, which audits them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from records.models import Conflict, ConflictResolution, ConflictStatus, WeddingStrategy
from records.oversight import wedding_strategy_delete, wedding_strategy_save
from records.registry import kinds, record_kind
from records.services import SyncRefused, actor_for_staff, conflict_resolve
from wedsync.admin_scope import WeddingScopedAdmin
from wedsync.models import Wedding
from wedsync.services.audit import ClientInfo

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec
    from django.utils.functional import _StrOrPromise

_RESOLVED = "_records_conflict_resolved"  # whether save_model resolved it, for the response


def _resolve(request: HttpRequest, conflict: Conflict, resolution: str, values: dict[str, Any] | None) -> bool:
    """Resolve through the engine and say how; False (and an error message) when refused."""
    try:
        _conflict, result = conflict_resolve(
            actor=actor_for_staff(user=request.user, wedding_id=conflict.wedding_id),
            conflict_id=conflict.pk,
            resolution=resolution,
            values=values,
            client=ClientInfo.from_request(request),
        )
    except SyncRefused as refused:
        messages.error(request, f"Conflict {conflict.pk}: not resolved: {refused.message}")
        return False
    version = f"version {result.reply['version']}" if result is not None else "unchanged"
    messages.success(
        request,
        f"Conflict {conflict.pk} resolved ({ConflictResolution(resolution).label.lower()}): "
        f"{conflict.kind} {conflict.record_id} is {version}; everyone concerned was told.",
    )
    return True


class ConflictResolveForm(forms.ModelForm[Conflict]):
    resolve_with = forms.ChoiceField(
        label="Resolve by",
        choices=ConflictResolution.choices,
        widget=forms.RadioSelect,
        initial=ConflictResolution.THEIRS,
    )
    merged_values = forms.JSONField(
        label="Merged values",
        required=False,
        help_text='For "Apply merged values": the fields to write, as a JSON object; starts as the record '
        "with the submitted edit on top.",
    )

    class Meta:
        model = Conflict
        fields: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conflict = self.instance
        if conflict.pk is not None and not conflict.mine.get("deleted"):
            self.fields["merged_values"].initial = {**conflict.theirs, **conflict.mine}

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        values = cleaned.get("merged_values")
        if cleaned.get("resolve_with") == ConflictResolution.CUSTOM and not (isinstance(values, dict) and values):
            self.add_error("merged_values", "Write the values to apply, as a JSON object of field: value.")
        return cleaned


@admin.register(Conflict)
class ConflictAdmin(WeddingScopedAdmin[Conflict]):
    form = ConflictResolveForm
    list_display = (
        "id",
        "created_at",
        "wedding",
        "kind",
        "record_id",
        "strategy",
        "submitted_by",
        "status",
        "resolution",
    )
    list_filter = ("status", "kind", ("wedding", admin.RelatedOnlyFieldListFilter), "created_at")
    list_select_related = ("wedding", "member__user", "user")
    search_fields = ("wedding__name", "record_id")
    date_hierarchy = "created_at"
    readonly_fields = (
        "wedding",
        "record",
        "strategy",
        "base_version",
        "version",
        "submitted_by",
        "created_at",
        "sides",
        "status",
        "resolution",
        "resolved_values",
        "resolved_by",
        "resolved_at",
    )
    actions = ["keep_theirs", "apply_mine"]

    def get_fieldsets(self, request: HttpRequest, obj: Conflict | None = None) -> _FieldsetSpec:
        fieldsets: list[tuple[_StrOrPromise | None, _FieldOpts]] = [
            (
                None,
                {"fields": ("wedding", "record", "strategy", "base_version", "version", "submitted_by", "created_at")},
            ),
            ("Both sides", {"fields": ("sides",)}),
            ("Outcome", {"fields": ("status", "resolution", "resolved_values", "resolved_by", "resolved_at")}),
        ]
        if obj is not None and self.has_change_permission(request, obj):
            fieldsets.insert(2, ("Resolve", {"fields": ("resolve_with", "merged_values")}))
        return fieldsets

    @admin.display(description="submitted by")
    def submitted_by(self, conflict: Conflict) -> str:
        if conflict.member is not None:
            return f"{conflict.member} ({conflict.member.role})"
        return f"{conflict.user} (staff)" if conflict.user is not None else "-"

    @admin.display(description="record")
    def record(self, conflict: Conflict) -> SafeString:
        kind = record_kind(conflict.kind)
        label = f"{conflict.get_kind_display()} {conflict.record_id}"
        if kind is None or not kind.model._default_manager.filter(pk=conflict.record_id).exists():
            return format_html("{} (deleted)", label)
        opts = kind.model._meta
        try:
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[conflict.record_id])
        except NoReverseMatch:
            return format_html("{}", label)
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description="the record now (theirs) and the submitted edit (mine)")
    def sides(self, conflict: Conflict) -> SafeString:
        if conflict.mine.get("deleted"):
            return format_html("{}", "The submitted edit deletes the record.")
        names = sorted(set(conflict.theirs) | set(conflict.mine))
        rows = ((name, conflict.theirs.get(name, "-"), conflict.mine.get(name, "-")) for name in names)
        return format_html(
            "<table><thead><tr><th>field</th><th>theirs</th><th>mine</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the engine keeps conflicts

    def has_delete_permission(self, request: HttpRequest, obj: Conflict | None = None) -> bool:
        return False  # the record of who disagreed and how it was settled

    def has_change_permission(self, request: HttpRequest, obj: Conflict | None = None) -> bool:
        # Resolving is the only change; a resolved conflict is read-only.
        return super().has_change_permission(request, obj) and (obj is None or obj.status == ConflictStatus.OPEN)

    def save_model(self, request: HttpRequest, obj: Conflict, form: forms.ModelForm[Conflict], change: bool) -> None:
        """Never a save of the row: the engine resolves it (the record changes under the stream lock)."""
        resolution = form.cleaned_data["resolve_with"]
        values = form.cleaned_data.get("merged_values") if resolution == ConflictResolution.CUSTOM else None
        setattr(obj, _RESOLVED, _resolve(request, obj, resolution, values))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Nothing: a conflict has no related rows to save."""

    def response_change(self, request: HttpRequest, obj: Conflict) -> HttpResponse:
        resolved = getattr(obj, _RESOLVED, None)
        if resolved is None or IS_POPUP_VAR in request.POST:
            return super().response_change(request, obj)
        opts = obj._meta
        if resolved:
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))

    def _resolve_each(self, request: HttpRequest, queryset: QuerySet[Conflict], resolution: str) -> None:
        open_ones = list(queryset.filter(status=ConflictStatus.OPEN))
        for conflict in open_ones:
            _resolve(request, conflict, resolution, None)
        skipped = queryset.count() - len(open_ones)
        if skipped:
            self.message_user(request, f"Skipped {skipped}: already resolved.", messages.WARNING)

    @admin.action(description="Resolve: keep the records as they are (theirs)", permissions=["change"])
    def keep_theirs(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve_each(request, queryset, ConflictResolution.THEIRS)

    @admin.action(description="Resolve: apply the submitted edits (mine)", permissions=["change"])
    def apply_mine(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve_each(request, queryset, ConflictResolution.MINE)


# --- A wedding's strategies, on the wedding's page -----------------------------------------------------


def _defaults() -> str:
    return "; ".join(f"{kind.name}: {kind.default_strategy.label.lower()}" for kind in kinds())


class WeddingStrategyInline(admin.TabularInline[WeddingStrategy, Wedding]):
    """How a stale edit of each kind of record is resolved at this wedding, over the kind's default."""

    model = WeddingStrategy
    extra = 0
    fields = ("kind", "strategy")
    verbose_name = "record strategy"
    verbose_name_plural = "Record strategies (a kind not listed uses its default: " + _defaults() + ")"


def strategies_formset_save(request: HttpRequest, formset: BaseInlineFormSet[Any, Any, Any]) -> None:
    """Save the inline's rows through :mod:`records.oversight`, which audits each change."""
    user, client, wedding_id = request.user, ClientInfo.from_request(request), formset.instance.pk
    changed = formset.save(commit=False)
    for removed in formset.deleted_objects:
        wedding_strategy_delete(chosen=removed, user=user, client=client)  # type: ignore[arg-type]
    for chosen in changed:
        before = WeddingStrategy.objects.filter(pk=chosen.pk).first() if chosen.pk is not None else None
        if before is not None and before.kind != chosen.kind:
            wedding_strategy_delete(chosen=before, user=user, client=client)  # type: ignore[arg-type]
        wedding_strategy_save(
            wedding_id=wedding_id,
            kind=chosen.kind,
            strategy=chosen.strategy,
            user=user,  # type: ignore[arg-type]
            client=client,
        )
