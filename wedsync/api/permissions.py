"""What a service account's key may do (decision 0030). People's requests are not concerned: their
access is their membership or staff scope, checked by each service."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from wedsync.models import ApiScope, ServiceAccountKey


def key_scope_needed(request: Request, view: Any) -> ApiScope | None:
    """The scope a key needs for this request: the view's ``api_key_scopes`` for the method, else
    ``read`` for a safe method; None when keys may not make it at all."""
    declared: dict[str, ApiScope] = getattr(view, "api_key_scopes", {})
    if request.method in declared:
        return declared[request.method]
    return ApiScope.READ if request.method in SAFE_METHODS else None


class ApiKeyScopes(BasePermission):
    message = "This API key may not do that: its service account lacks the scope."

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ServiceAccountKey):
            return True
        method = (request.method or "").lower()
        if method not in view.http_method_names or not hasattr(view, method):
            return True  # the view answers 405, to a key as to anyone
        needed = key_scope_needed(request, view)
        if needed is None:
            self.message = "API keys may not do that: sign in as a person."
            return False
        self.message = f"This API key may not do that: its service account lacks the '{needed.value}' scope."
        return key.service_account.allows(needed)
