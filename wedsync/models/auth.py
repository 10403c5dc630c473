from __future__ import annotations

from django.conf import settings
from django.db import models


class UserTokenGeneration(models.Model):
    """A counter carried in every token as the ``gen`` claim.

    Bumping it (logout, a role change, deactivation) makes every token issued before unusable at
    once, access tokens included, without keeping a list of them. No row means generation 0.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="token_generation"
    )
    generation = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)
    reason = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"user {self.user_id}: generation {self.generation}"
