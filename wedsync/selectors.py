"""Reads of the core domain."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from wedsync.models import Member, UserTokenGeneration


def token_generation_current(*, user_id: int) -> int:
    """The user's token generation; tokens carrying an older one are revoked."""
    generation = UserTokenGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first()
    return generation or 0


def user_with_token_generation(*, user_id: object) -> tuple[User | None, int]:
    """The user (active or not) and its token generation, in one query; (None, 0) if unknown."""
    user = get_user_model().objects.select_related("token_generation").filter(pk=str(user_id)).first()
    if user is None:
        return None, 0
    try:
        return user, user.token_generation.generation
    except UserTokenGeneration.DoesNotExist:
        return user, 0


def memberships_active_for_user(*, user_id: int) -> list[Member]:
    """The user's active memberships, with their weddings, evaluated."""
    return list(Member.objects.filter(user_id=user_id, is_active=True).select_related("wedding").order_by("wedding_id"))
