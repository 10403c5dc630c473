"""Service accounts and their API keys in the oversight panel (decision 0030): superusers only.

A key is shown once, in the message after it is issued or rotated, and never again: only its prefix
and a hash are stored. Every change goes through wedsync.services.service_accounts (audited).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.models import APIKey

from wedsync.models import ApiScope, ServiceAccount, ServiceAccountKey
from wedsync.services.audit import ClientInfo
from wedsync.services.service_accounts import (
    service_account_key_issue,
    service_account_key_revoke,
    service_account_key_rotate,
    service_account_save,
)

# The library's own unscoped key model is not used: its keys would belong to no account.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


def _actor(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # the admin's views are for signed-in staff only
        raise TypeError("an admin request without a signed-in user")
    return user


def _shown_once(request: HttpRequest, account: ServiceAccount, raw: str) -> None:
    messages.warning(
        request,
        f"The new API key of {account.name} is: {raw} . Copy it now: it is stored hashed and will never "
        "be shown again.",
    )


class _SuperusersOnly:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke keys and deactivate the account instead: the audit log refers to them


class ServiceAccountForm(forms.ModelForm[ServiceAccount]):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple, required=False, help_text="What its keys may do."
    )

    class Meta:
        model = ServiceAccount
        fields = ("name", "agency", "weddings", "scopes", "is_active")


class KeyInline(admin.TabularInline[ServiceAccountKey, ServiceAccount]):
    model = ServiceAccountKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "created", "expiry_date", "last_used_at", "revoked")
    readonly_fields = fields
    verbose_name_plural = "API keys (issue, rotate and revoke them with the actions)"

    def has_add_permission(self, request: HttpRequest, obj: ServiceAccount | None = None) -> bool:
        return False


@admin.register(ServiceAccount)
class ServiceAccountAdmin(_SuperusersOnly, admin.ModelAdmin[ServiceAccount]):
    form = ServiceAccountForm
    list_display = ("name", "agency", "scopes", "is_active", "created_at")
    list_filter = ("is_active", "agency")
    search_fields = ("name",)
    filter_horizontal = ("weddings",)
    inlines = [KeyInline]
    actions = ["issue_key"]

    def save_model(self, request: HttpRequest, obj: ServiceAccount, form: Any, change: bool) -> None:
        client = ClientInfo.from_request(request)
        service_account_save(account=obj, actor=_actor(request), client=client)
        if not change:
            _key, raw = service_account_key_issue(account=obj, name="first key", actor=_actor(request), client=client)
            _shown_once(request, obj, raw)

    @admin.action(description="Issue a new API key (shown once)")
    def issue_key(self, request: HttpRequest, queryset: QuerySet[ServiceAccount]) -> None:
        for account in queryset:
            _key, raw = service_account_key_issue(
                account=account,
                name="issued in the admin",
                actor=_actor(request),
                client=ClientInfo.from_request(request),
            )
            _shown_once(request, account, raw)


@admin.register(ServiceAccountKey)
class ServiceAccountKeyAdmin(_SuperusersOnly, admin.ModelAdmin[ServiceAccountKey]):
    list_display = ("prefix", "name", "service_account", "created", "expiry_date", "last_used_at", "revoked")
    list_filter = ("revoked", "service_account")
    search_fields = ("prefix", "name", "service_account__name")
    fields = ("prefix", "name", "service_account", "created", "expiry_date", "last_used_at", "revoked")
    readonly_fields = ("prefix", "service_account", "created", "last_used_at", "revoked")
    actions = ["rotate", "revoke"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # issued from the account, which shows the key once

    @admin.action(description="Rotate: a new key now, the old one until the grace period ends")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ServiceAccountKey]) -> None:
        for key in queryset.filter(revoked=False).select_related("service_account"):
            _fresh, raw = service_account_key_rotate(
                key=key, actor=_actor(request), client=ClientInfo.from_request(request)
            )
            _shown_once(request, key.service_account, raw)

    @admin.action(description="Revoke (for good)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ServiceAccountKey]) -> None:
        for key in queryset.filter(revoked=False):
            service_account_key_revoke(key=key, actor=_actor(request), client=ClientInfo.from_request(request))
        self.message_user(request, "Revoked: those keys are refused from now on.", messages.SUCCESS)
