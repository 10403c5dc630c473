"""Staff scope in the oversight panel (docs/decisions/0022).

A coordinator sees, edits and acts on the rows of the weddings they oversee and nothing else;
superusers see everything. Every rule here asks :mod:`wedsync.selectors` (``weddings_overseen``
and friends), the same selectors the API and presence ask, so the panel and the API cannot
disagree about who oversees what.

- :class:`WeddingScopedAdmin` narrows the list, the object permissions and the choices of every
  form field that names a wedding, a member, an account or an agency; a direct URL to an object
  outside the scope is a 404 (as for one that does not exist) and is audited (``admin.refuse``),
  and so are the out-of-scope ids of a forged action post.
- :class:`SuperuserOnlyAdmin` is for what belongs to no wedding (agencies, tickets, token state).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, TypeVar

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import TO_FIELD_VAR, BaseModelAdmin
from django.contrib.admin.utils import unquote
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db.models import ForeignKey, ManyToManyField, Model, Q, QuerySet
from django.forms import ModelChoiceField, ModelMultipleChoiceField
from django.http import Http404, HttpRequest, HttpResponse

from wedsync.models import Agency, AuditOutcome, Member, Wedding
from wedsync.selectors import users_overseen, wedding_may_oversee, weddings_overseen_condition
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

_M = TypeVar("_M", bound=Model)
_P = TypeVar("_P", bound=Model)

_NOT_FOUND = "Nothing with that id here."
_REFUSED = "Outside the weddings this user oversees."


def _user(request: HttpRequest) -> User | AnonymousUser:
    return request.user


def is_superuser_request(request: HttpRequest) -> bool:
    """Whether the request comes from an active superuser, who oversees everything."""
    user = _user(request)
    return bool(user.is_active and user.is_superuser)


def overseen_choices(request: HttpRequest, model: type[Model]) -> Q | None:
    """The condition a form field's choices of ``model`` must meet for this user, or None when
    the model has nothing to do with staff scope. A coordinator may not pick a wedding, a member,
    an account or an agency outside their scope: no adding a member to another agency's wedding,
    no moving a record to one."""
    user = _user(request)
    if model is Wedding:
        return weddings_overseen_condition(user=user, wedding_path="pk")
    if model is Member:
        return weddings_overseen_condition(user=user, wedding_path="wedding")
    if model is Agency:
        return Q() if is_superuser_request(request) else Q(coordinators=user.pk)
    if issubclass(model, User):
        return Q() if is_superuser_request(request) else Q(pk__in=users_overseen(user=user).values("pk"))
    return None


class OverseenChoices(BaseModelAdmin[_M]):
    """Form fields of an admin or an inline offer only the choices the user may pick."""

    def _narrowed(
        self, db_field: ForeignKey[Any, Any] | ManyToManyField[Any, Any], request: HttpRequest
    ) -> QuerySet[Any] | None:
        related: type[Model] = db_field.remote_field.model
        condition = overseen_choices(request, related)
        if condition is None:
            return None
        base = self.get_field_queryset(None, db_field, request)
        return (related._default_manager.all() if base is None else base).filter(condition)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        if "queryset" not in kwargs and (narrowed := self._narrowed(db_field, request)) is not None:
            kwargs["queryset"] = narrowed
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: ManyToManyField[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelMultipleChoiceField[Any] | None:
        if "queryset" not in kwargs and (narrowed := self._narrowed(db_field, request)) is not None:
            kwargs["queryset"] = narrowed
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class ScopedAdmin(OverseenChoices[_M], admin.ModelAdmin[_M]):
    """The change, delete and history pages of an object outside the user's scope answer 404, as
    for an object that does not exist (so a coordinator cannot learn which ids other agencies
    hold), and the attempt is audited. Subclasses narrow :meth:`get_queryset` and say which
    wedding an object belongs to (:meth:`wedding_id_of`)."""

    def wedding_id_of(self, obj: _M) -> int | None:
        return None

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if object_id is not None:
            self._refuse_unless_visible(request, object_id, view="change")
        return super().changeform_view(request, object_id, form_url, extra_context)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        self._refuse_unless_visible(request, object_id, view="delete")
        return super().delete_view(request, object_id, extra_context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        self._refuse_unless_visible(request, object_id, view="history")
        return super().history_view(request, object_id, extra_context)

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if selected and not is_superuser_request(request):
            # Django runs the action on the selected rows of the narrowed list: the others are
            # dropped, and recorded here as what they are.
            self._audit_outside_scope(request, selected, view=f"action:{request.POST.get('action', '')}"[:64])
        return super().response_action(request, queryset)

    def _refuse_unless_visible(self, request: HttpRequest, object_id: str, *, view: str) -> None:
        """Before Django's view opens its transaction, so the audit entry stays."""
        to_field = request.POST.get(TO_FIELD_VAR, request.GET.get(TO_FIELD_VAR)) or None
        if to_field and not self.to_field_allowed(request, to_field):
            return  # Django's own view refuses it
        if self.get_object(request, unquote(object_id), to_field) is not None:
            return
        if to_field is None:
            self._audit_outside_scope(request, [unquote(object_id)], view=view)
        raise Http404(_NOT_FOUND)

    def _audit_outside_scope(self, request: HttpRequest, ids: list[str], *, view: str) -> None:
        """One ``admin.refuse`` entry per wedding for the ``ids`` that exist but are not the user's."""
        try:
            visible = self.get_queryset(request).filter(pk__in=ids).values("pk")
            strangers = list(self.model._default_manager.filter(pk__in=ids).exclude(pk__in=visible)[:100])
        except (ValidationError, ValueError):
            return  # ids that name nothing: the view answers them
        by_wedding: dict[int | None, list[str]] = defaultdict(list)
        for obj in strangers:
            by_wedding[self.wedding_id_of(obj)].append(str(obj.pk))
        opts = self.model._meta
        for wedding_id, pks in by_wedding.items():
            audit_record(
                action=AuditAction.ADMIN_REFUSE,
                outcome=AuditOutcome.REFUSED,
                actor=_user(request),
                wedding_id=wedding_id,
                target=f"{opts.app_label}.{opts.model_name}:{','.join(pks)}"[:200],
                client=ClientInfo.from_request(request),
                details={"view": view, "ids": pks, "reason": _REFUSED},
            )


class WeddingScopedAdmin(ScopedAdmin[_M]):
    """Rows that belong to a wedding, reached from the model through ``wedding_path``."""

    wedding_path: ClassVar[str] = "wedding"

    def get_queryset(self, request: HttpRequest) -> QuerySet[_M]:
        condition = weddings_overseen_condition(user=_user(request), wedding_path=self.wedding_path)
        return super().get_queryset(request).filter(condition)

    def wedding_id_of(self, obj: _M) -> int | None:
        *hops, last = self.wedding_path.split("__")
        target: Any = obj
        for hop in hops:
            target = getattr(target, hop)
        value = target.pk if last == "pk" else getattr(target, f"{last}_id")
        return int(value) if value is not None else None

    def _oversees(self, request: HttpRequest, obj: _M | None) -> bool:
        if obj is None or is_superuser_request(request):
            return True
        wedding_id = self.wedding_id_of(obj)
        return wedding_id is not None and wedding_may_oversee(user=_user(request), wedding_id=wedding_id)

    def has_view_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return super().has_view_permission(request, obj) and self._oversees(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._oversees(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._oversees(request, obj)


class SuperuserOnlyAdmin(admin.ModelAdmin[_M]):
    """What belongs to no one wedding: only superusers see it, whatever permissions a group grants."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_superuser_request(request)

    def has_view_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return is_superuser_request(request) and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser_request(request) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return is_superuser_request(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return is_superuser_request(request) and super().has_delete_permission(request, obj)


class SuperuserOnlyInline(admin.TabularInline[_M, _P]):
    """An inline only superusers see or edit (who oversees a wedding is theirs to decide)."""

    def has_view_permission(self, request: HttpRequest, obj: _P | None = None) -> bool:  # type: ignore[override]
        return is_superuser_request(request)

    def has_add_permission(self, request: HttpRequest, obj: _P | None = None) -> bool:
        return is_superuser_request(request)

    def has_change_permission(self, request: HttpRequest, obj: _P | None = None) -> bool:  # type: ignore[override]
        return is_superuser_request(request)

    def has_delete_permission(self, request: HttpRequest, obj: _P | None = None) -> bool:  # type: ignore[override]
        return is_superuser_request(request)
