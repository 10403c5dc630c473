"""The admin's sign-in lockout: django-axes, counting failures per username and per address.

Axes keeps its counters in the Django cache (Redis when ``REDIS_URL`` is set, so every node sees
them, each expiring after the cool-off). Only the admin's form is locked out: the token API has
throttles of its own (``wedsync/api/throttles.py``). Every failed sign-in and every lockout is
written to the audit log (:func:`wedsync.services.admin_login.admin_login_failure_record`).
"""

from __future__ import annotations

import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.handlers.cache import AxesCacheHandler
from axes.helpers import get_client_username
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from wedsync.services.admin_login import admin_login_failure_record, admin_login_success_record
from wedsync.services.audit import ClientInfo


class AdminLoginLockoutBackend(AxesStandaloneBackend):  # type: ignore[misc]  # axes is untyped
    """Axes' check that refuses a locked-out sign-in before the password is tried.

    A caller without a request (a script, a test) is not an admin sign-in: it goes on to the
    password check, where axes would refuse it for want of a request."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)  # type: ignore[no-any-return]


class AuditedAdminLoginHandler(AxesCacheHandler):  # type: ignore[misc]
    """Axes' cache handler for the admin's requests only, auditing each failure and lockout."""

    def user_login_failed(self, sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
        if request is None or not self.is_admin_request(request):
            return  # the token API: throttled on its own, audited where the password is judged
        # The backend marks a sign-in tried while already locked out (it is not counted again).
        locked_before = bool(getattr(request, "axes_locked_out", False))
        super().user_login_failed(sender, credentials, request, **kwargs)
        admin_login_failure_record(
            username=str(get_client_username(request, credentials) or ""),
            client=ClientInfo.from_request(request),
            failures=int(getattr(request, "axes_failures_since_start", None) or 0),
            locked_before=locked_before,
            locked_now=bool(getattr(request, "axes_locked_out", False)),
        )

    def user_logged_in(self, sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        super().user_logged_in(sender, request, user, **kwargs)
        if request is not None and isinstance(user, User) and self.is_admin_request(request):
            admin_login_success_record(user=user, client=ClientInfo.from_request(request))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None, credentials: Any) -> HttpResponse:
    """What a locked-out sign-in sees (``AXES_LOCKOUT_CALLABLE``): 429, the reason and when to retry."""
    seconds = settings.ADMIN_LOGIN_COOLOFF_SECONDS
    context = {**admin.site.each_context(request), "title": "Signing in is locked", "minutes": math.ceil(seconds / 60)}
    response = render(request, "admin/login_locked.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response
