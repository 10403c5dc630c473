"""Reads of the core domain."""

from __future__ import annotations

from wedsync.models import Member, UserTokenGeneration


def token_generation_current(*, user_id: int) -> int:
    """The user's token generation; tokens carrying an older one are revoked."""
    generation = UserTokenGeneration.objects.filter(user_id=user_id).values_list("generation", flat=True).first()
    return generation or 0


def memberships_active_for_user(*, user_id: int) -> list[Member]:
    """The user's active memberships, with their weddings, evaluated."""
    return list(Member.objects.filter(user_id=user_id, is_active=True).select_related("wedding").order_by("wedding_id"))
