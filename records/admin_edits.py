"""Editing timeline items, tasks and RSVPs in the oversight panel, through the sync engine.

A form carries the version the page showed (``base_version``) and, hidden beside every field, the
field's value then, so the engine receives only what this admin changed, based on what they saw:
a stale form is resolved by the wedding's strategy like any other stale edit (or kept as a
conflict under ``manual``), and everyone concerned is told. The outcome is the admin's message.

The engine is called while the form is validated: a refusal only the engine makes (notes longer
than a record may hold) is then the form's error, and the page comes back with what was typed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from django import forms
from django.contrib import messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from records.oversight import record_admin_delete, record_admin_save
from records.registry import RecordKind, record_kind
from records.services import SyncRefused, SyncResult
from records.strategies import Outcome
from wedsync.admin_scope import WeddingScopedAdmin
from wedsync.services.audit import ClientInfo

_SAVED = "_records_admin_saved"  # the engine's answer, from save_model to the response


@dataclass(frozen=True, slots=True)
class _Saved:
    level: int
    message: str | SafeString
    stay: bool  # show the record's page again: the edit did not apply as the admin wrote it


# A refusal's message names its field as a path ("changes: ... - at `$.notes`") or first ("guest: ...").
_FIELD_PATH = re.compile(r"at `\$\.(\w+)`")
_FIELD_LEAD = re.compile(r"^(\w+):")


class RecordEditForm(ModelForm[Any]):
    base_version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1)
    # The admin's engine call for this request (``RecordEditAdmin.get_form``); None: only validate.
    submit: ClassVar[Callable[[RecordEditForm], SyncResult | None] | None] = None
    result: SyncResult | None = None  # the engine's answer; None when nothing changed

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["base_version"].initial = self.instance.version
        for name, field in self.fields.items():
            field.show_hidden_initial = name != "base_version"

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if self.instance.pk is not None and cleaned.get("base_version") is None and "base_version" not in self.errors:
            raise ValidationError("This form does not say which version it showed: reload the page and edit again.")
        return cleaned

    def full_clean(self) -> None:
        super().full_clean()
        submit = type(self).submit
        if submit is None or self.errors:
            return
        try:
            self.result = submit(self)
        except SyncRefused as refused:
            self.add_error(self._field_of(refused.message), f"Not saved: {refused.message}")

    def _field_of(self, message: str) -> str | None:
        for pattern in (_FIELD_PATH, _FIELD_LEAD):
            found = pattern.search(message)
            if found and found.group(1) in self.fields:
                return found.group(1)
        return None

    def engine_changes(self, kind: RecordKind, *, blank_is_none: Iterable[str] = ()) -> dict[str, Any]:
        """The kind's fields as the engine takes them: all of them for a new record, else the ones
        this admin changed on the page."""
        names = [name for name in kind.fields if name in self.fields]
        if self.instance.pk is not None:
            names = [name for name in names if name in self.changed_data]
        changes = {name: _engine_value(self.cleaned_data[name]) for name in names}
        for name in blank_is_none:
            if changes.get(name) == "":
                changes[name] = None
        return changes


def _engine_value(value: Any) -> Any:
    if isinstance(value, Model):
        return value.pk
    if isinstance(value, QuerySet | list | tuple):
        return sorted(item.pk if isinstance(item, Model) else item for item in value)
    return value


def _saved(label: str, result: SyncResult) -> _Saved:
    reply = result.reply
    version, outcome = reply["version"], reply["outcome"]
    lost = ", ".join(reply.get("lost") or [])
    if outcome == Outcome.APPLIED:
        return _Saved(messages.SUCCESS, f"Applied: {label} is saved as version {version}.", stay=False)
    if outcome == Outcome.MERGED:
        return _Saved(
            messages.SUCCESS,
            f"Merged: {label} is saved as version {version}, with the changes others made since you opened it.",
            stay=False,
        )
    if outcome == Outcome.OVERRIDDEN:
        kept = "saved in part" if reply.get("changed") else "not saved"
        return _Saved(
            messages.WARNING,
            f"Overridden: {label} is {kept}: your change of {lost} lost to newer changes made since you "
            f"opened it (the wedding's strategy decides). It is at version {version}, shown here.",
            stay=True,
        )
    url = reverse("admin:records_conflict_change", args=[reply["conflict"]])
    return _Saved(
        messages.WARNING,
        format_html(
            'Conflict: {} was changed since you opened it, so your edit is kept as <a href="{}">conflict {}</a> '
            "for a planner or coordinator to resolve; the record is unchanged.",
            label,
            url,
            reply["conflict"],
        ),
        stay=True,
    )


class RecordEditAdmin(WeddingScopedAdmin[Any]):
    """A record kind's admin whose saves and deletes are the engine's ops (subclasses name the kind)."""

    form = RecordEditForm
    record_kind_name: ClassVar[str]
    owner_field: ClassVar[str] = "wedding"  # fixed once created: a record does not move between weddings
    blank_is_none: ClassVar[frozenset[str]] = frozenset()

    def _kind(self) -> RecordKind:
        kind = record_kind(self.record_kind_name)
        if kind is None:  # pragma: no cover - a registry without the admin's kind is a programming error
            raise LookupError(self.record_kind_name)
        return kind

    def _label(self, obj: Any) -> str:
        return f"the {obj._meta.verbose_name} “{obj}”"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, self.owner_field] if obj is not None else fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)

        def submit(bound: RecordEditForm) -> SyncResult | None:
            return self._submit(request, bound)

        return type(form.__name__, (form,), {"submit": staticmethod(submit)})

    def _submit(self, request: HttpRequest, form: RecordEditForm) -> SyncResult | None:
        """The form's changes through the engine; None when a change form changed nothing."""
        kind, obj = self._kind(), form.instance
        changes = form.engine_changes(kind, blank_is_none=self.blank_is_none)
        change = obj.pk is not None
        if change and not changes:
            return None
        return record_admin_save(
            user=request.user,  # type: ignore[arg-type]
            kind=kind.name,
            wedding_id=self.wedding_id_of(obj) or 0,
            record_id=obj.pk if change else None,
            base_version=form.cleaned_data.get("base_version") if change else None,
            changes=changes,
            client=ClientInfo.from_request(request),
        )

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool) -> None:
        """The engine wrote the record while the form was validated: take its answer."""
        if not isinstance(form, RecordEditForm):  # pragma: no cover - every record admin uses one
            raise TypeError("record admins need a RecordEditForm")
        result = form.result
        if result is not None:
            obj.pk = result.reply["id"]
        if obj.pk is not None:
            with contextlib.suppress(ObjectDoesNotExist):  # deleted meanwhile
                obj.refresh_from_db()  # the record as the engine left it, not as the form built it
        if result is None:
            saved = _Saved(messages.INFO, f"Nothing changed: {self._label(obj)} is as it was.", stay=False)
        else:
            saved = _saved(self._label(obj), result)
        setattr(obj, _SAVED, saved)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Nothing: the engine wrote the record's many-to-many fields with the rest, and there are no inlines."""

    def construct_change_message(self, request: HttpRequest, form: Any, formsets: Any, add: bool = False) -> Any:
        """The history says what the engine did, not what the form showed as changed."""
        result: SyncResult | None = getattr(form, "result", None)
        if result is None:
            return []
        reply = result.reply
        if reply["outcome"] == Outcome.CONFLICT:
            return f"Kept as conflict {reply['conflict']}: the record is unchanged."
        if add:
            return [{"added": {}}]
        labels = [str(form.fields[name].label or name) if name in form.fields else name for name in reply["changed"]]
        if reply["outcome"] == Outcome.OVERRIDDEN:
            lost = ", ".join(reply.get("lost") or [])
            return f"Overridden: {lost} lost to newer changes; changed: {', '.join(labels) or 'nothing'}."
        return [{"changed": {"fields": labels}}]

    def _respond(self, request: HttpRequest, obj: Any, saved: _Saved) -> HttpResponse:
        self.message_user(request, saved.message, saved.level)
        opts = obj._meta
        if obj.pk is None or "_addanother" in request.POST:
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        if saved.stay or "_continue" in request.POST:
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        saved = getattr(obj, _SAVED, None)
        if saved is None or IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, post_url_continue)
        return self._respond(request, obj, saved)

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        saved = getattr(obj, _SAVED, None)
        if saved is None or IS_POPUP_VAR in request.POST:
            return super().response_change(request, obj)
        return self._respond(request, obj, saved)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        """A tombstone and ``record.deleted`` to everyone concerned, as a member's deletion."""
        try:
            record_admin_delete(
                user=request.user,  # type: ignore[arg-type]
                kind=self._kind().name,
                wedding_id=self.wedding_id_of(obj) or 0,
                record_id=obj.pk,
                base_version=obj.version,
                client=ClientInfo.from_request(request),
            )
        except SyncRefused as refused:
            messages.error(request, f"Not deleted: {self._label(obj)}: {refused.message}")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)
