"""Where a change of someone's access revokes their tokens and sessions, whichever way it is made.

Deactivating a user and changing or resetting a password bump the user's token generation
(:func:`wedsync.services.auth.tokens_revoke_for_user`), in the transaction of the change: every
access and refresh token issued before stops working, live sockets are closed (4401) through the
``tokens_revoked`` signal or, if that message is lost, each node's access check within 5 s, and
browser sessions opened before are logged out at their next request (:class:`SessionRevocationMiddleware`).

A password change is recognised through Django's own hook for it: every validator in
``AUTH_PASSWORD_VALIDATORS`` is told ``password_changed`` once ``set_password`` was followed by a
save. A login that only upgrades the stored hash (a new hasher) does not call it, and an account's
first usable password replaces none that anyone could have used: neither revokes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth import logout
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from wedsync.selectors import token_generation_current
from wedsync.services.auth import tokens_revoke_for_user

SESSION_GENERATION_KEY = "wedsync_token_generation"  # the generation a browser session was opened at
# Set on a User instance being saved: its save replaces a usable password / deactivates it.
_PASSWORD_REPLACED, _DEACTIVATED = "_wedsync_password_replaced", "_wedsync_deactivated"


class PasswordChangeRevokes:
    """A password "validator" that validates nothing: Django tells it of every password change
    (after the save), and it revokes what was issued with the old password."""

    def validate(self, password: str, user: Any = None) -> None:
        return None

    def password_changed(self, password: str, user: Any = None) -> None:
        if isinstance(user, User) and user.__dict__.pop(_PASSWORD_REPLACED, False):
            tokens_revoke_for_user(user_id=user.pk, reason="password_changed")

    def get_help_text(self) -> str:
        return ""


@receiver(pre_save, sender=User)
def _access_change_noticed(sender: type[User], instance: User, update_fields: Any = None, **kwargs: Any) -> None:
    """Compare the saved row with what is being saved (one query, only for saves that may change
    the password or the active flag)."""
    if instance._state.adding:
        return
    if update_fields is not None and not {"password", "is_active"} & set(update_fields):
        return
    before = User.objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    if before is None:
        return
    password, was_active = before
    # A usable password replaced: a first password (none anyone could log in with) revokes nothing.
    setattr(
        instance, _PASSWORD_REPLACED, password != instance.password and bool(password) and is_password_usable(password)
    )
    if was_active and not instance.is_active:
        setattr(instance, _DEACTIVATED, True)


@receiver(post_save, sender=User)
def _deactivation_revokes(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    if created:
        return
    if instance.__dict__.pop(_DEACTIVATED, False):
        tokens_revoke_for_user(user_id=instance.pk, reason="deactivated")
    # A password disabled (the admin's "Password-based authentication: disabled") makes no
    # password_changed call; a usable one replaced is revoked there, once the save is done.
    if not is_password_usable(instance.password) and instance.__dict__.pop(_PASSWORD_REPLACED, False):
        tokens_revoke_for_user(user_id=instance.pk, reason="password_disabled")


@receiver(user_logged_in)
def _session_remembers_its_generation(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_GENERATION_KEY] = token_generation_current(user_id=user.pk)


def session_generation_revoked(*, session_generation: object, user_id: int) -> bool:
    """Whether a session opened at ``session_generation`` (None: before sessions kept one) was
    revoked since: logout everywhere, a password change, a deactivation, a role change."""
    current = token_generation_current(user_id=user_id)
    if current == 0:
        return False  # nothing was ever revoked
    return not isinstance(session_generation, int) or session_generation < current


class SessionRevocationMiddleware:
    """Logs out a browser session whose user's tokens were revoked after it was opened (after
    ``AuthenticationMiddleware``). One small query per request of a logged-in browser."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            user is not None
            and user.is_authenticated
            and session_generation_revoked(
                session_generation=request.session.get(SESSION_GENERATION_KEY), user_id=user.pk
            )
        ):
            logout(request)
        return self.get_response(request)
