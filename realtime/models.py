from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from realtime.names import Priority


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
    # The credential that asked for the ticket, whose end the socket shares: a browser session, or
    # an access token's expiry (the socket must then refresh in-band before it, like a token's).
    session_key = models.CharField(max_length=40, null=True, blank=True)  # noqa: DJ001  NULL: not a session
    credential_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        state = "used" if self.used_at else "unused"
        return f"ticket for user {self.user_id} ({state}, expires {self.expires_at:%H:%M:%S})"


def new_epoch() -> str:
    return secrets.token_hex(8)


class WeddingStream(models.Model):
    """A wedding's event sequence: the last ``seq`` handed out and the history's epoch.

    ``seq`` is assigned under this row's lock in the transaction that stores the event, so it is
    gap-free per wedding. ``epoch`` changes only if the wedding's history is reset; a client that
    resubscribes with another epoch is told ``recovered: false``.
    """

    wedding = models.OneToOneField("wedsync.Wedding", on_delete=models.CASCADE, primary_key=True, related_name="stream")
    last_seq = models.PositiveBigIntegerField(default=0)
    epoch = models.CharField(max_length=32, default=new_epoch)

    def __str__(self) -> str:
        return f"wedding {self.wedding_id}: seq {self.last_seq}, epoch {self.epoch}"


class Event(models.Model):
    """The durable event log: every event is stored here before any socket sees it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=64)
    priority = models.PositiveSmallIntegerField(choices=[(p.value, p.wire) for p in Priority])
    sender_member = models.ForeignKey(
        "wedsync.Member", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The sender as the event frame shows it ({"member", "role", "name"}), frozen at publishing.
    sender = models.JSONField(default=dict, blank=True)
    audience_roles = models.JSONField(default=list, blank=True)
    audience_members = models.JSONField(default=list, blank=True)
    data = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001  NULL: no key, unconstrained
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["wedding_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["wedding", "seq"], name="event_unique_wedding_seq"),
            models.UniqueConstraint(
                fields=["sender_member", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="event_unique_sender_idempotency_key",
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="event_created_idx")]

    def __str__(self) -> str:
        return f"wedding {self.wedding_id} #{self.seq} {self.type}"


class EventAck(models.Model):
    """A member has received an ``emergency`` or ``critical`` event (the ``ack`` op)."""

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="acks")
    member = models.ForeignKey("wedsync.Member", on_delete=models.CASCADE, related_name="+")
    acknowledged_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "member"], name="event_ack_unique_member")]

    def __str__(self) -> str:
        return f"{self.event} acknowledged by member {self.member_id}"
