from __future__ import annotations

from django.conf import settings
from django.db import models


class RealtimeTicket(models.Model):
    """A single-use, short-lived pass for ``/ws/v1/?ticket=...``.

    Only the SHA-256 of the ticket is stored, so neither the database nor a log line holds a usable
    secret. It is bound to the user's token generation: revoking the user's tokens revokes it too.
    """

    ticket_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="realtime_tickets")
    token_generation = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        state = "used" if self.used_at else "unused"
        return f"ticket for user {self.user_id} ({state}, expires {self.expires_at:%H:%M:%S})"
