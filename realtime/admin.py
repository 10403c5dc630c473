from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from realtime.models import RealtimeTicket
from wedsync.admin_scope import SuperuserOnlyAdmin


@admin.register(RealtimeTicket)
class RealtimeTicketAdmin(SuperuserOnlyAdmin[RealtimeTicket]):
    """Tickets are a user's, not a wedding's: superusers only."""

    list_display = ("user", "created_at", "expires_at", "used_at")
    list_filter = ("used_at", "created_at")
    search_fields = ("user__username",)
    readonly_fields = ("ticket_hash", "user", "token_generation", "created_at", "expires_at", "used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
