"""Emergency writes: open (with the ``emergency.alert`` that raised it) and resolve.

Opening happens inside the transaction that stores the alert (``member_event_publish`` calls
:func:`emergency_open`), so there is never an emergency without its alert nor an alert that opened
nothing. Every ``emergency.alert`` opens its own row: the escalation webhook (decision 0010) follows
each alert by its row, and two alarms about two incidents end separately. The wedding is in
emergency mode while any row is open.

Resolving takes the wedding's stream lock before anything else, the lock every publish takes: a
vendor's widened publish decides its reach under that lock (realtime/services/events.py), so it is
either stored before ``emergency.resolved`` (and widened) or after it (and not).
"""

from __future__ import annotations

import uuid

import structlog
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from presence.emergency.selectors import emergencies_open_ids, emergency_may_resolve, emergency_resolver_view
from presence.models import Emergency
from realtime.names import EventType
from realtime.protocol import iso
from realtime.services.events import event_publish, wedding_stream_lock
from wedsync.models import AuditOutcome, Member
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

logger = structlog.get_logger(__name__)


class EmergencyRefused(Exception):
    def __init__(self, *, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def emergency_open(*, wedding_id: int, event_id: uuid.UUID, raised_by: Member) -> Emergency:
    """Open an emergency for the ``emergency.alert`` just stored. Call it inside the transaction
    that stored the event: if either fails, neither is kept."""
    emergency = Emergency.objects.create(wedding_id=wedding_id, raised_event_id=event_id, raised_by=raised_by)
    logger.info("emergency.opened", wedding=wedding_id, emergency=emergency.pk, member=raised_by.pk)
    return emergency


def emergency_resolve(
    *, wedding_id: int, emergency_id: int, user: User | AnonymousUser, client: ClientInfo | None = None
) -> Emergency:
    """Resolve an open emergency for staff or the wedding's active planner and tell everyone with
    ``emergency.resolved`` (idempotent: the first resolution stays, nothing is sent again).

    Raises :class:`EmergencyRefused`: ``forbidden`` (audited) for anyone else, ``not_found`` for an
    emergency that is not this wedding's.
    """
    target = f"emergency:{emergency_id}"
    if not emergency_may_resolve(user=user, wedding_id=wedding_id) or not isinstance(user, User):
        reason = "Only staff and the wedding's planner may resolve an emergency."
        audit_record(
            action=AuditAction.EMERGENCY_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=user,
            wedding_id=wedding_id,
            target=target,
            client=client,
            details={"op": "resolve", "reason": reason},
        )
        raise EmergencyRefused(code="forbidden", message=reason)
    if not Emergency.objects.filter(pk=emergency_id, wedding_id=wedding_id).exists():
        raise EmergencyRefused(code="not_found", message=f"There is no emergency {emergency_id} in this wedding.")
    with transaction.atomic():
        wedding_stream_lock(wedding_id=wedding_id)
        now = timezone.now()
        resolved = Emergency.objects.filter(pk=emergency_id, resolved_at__isnull=True).update(
            resolved_at=now, resolved_by=user
        )
        if resolved:
            emergency = Emergency.objects.select_related("raised_event").get(pk=emergency_id)
            still_open = emergencies_open_ids(wedding_id=wedding_id)
            published = event_publish(
                wedding_id=wedding_id,
                event_type=EventType.EMERGENCY_RESOLVED,
                data={
                    "emergency": emergency.pk,
                    "alert_seq": emergency.raised_event.seq,
                    "message": emergency.raised_event.data.get("message"),
                    "resolved_at": iso(now),
                    "resolved_by": emergency_resolver_view(user=user, wedding_id=wedding_id),
                    # Emergency mode ends with the last open emergency, not with each one.
                    "emergency_mode": bool(still_open),
                    "open": still_open,
                },
            )
            audit_record(
                action=AuditAction.EMERGENCY_RESOLVE,
                outcome=AuditOutcome.SUCCESS,
                actor=user,
                wedding_id=wedding_id,
                target=target,
                client=client,
                details={"alert_seq": emergency.raised_event.seq, "seq": published.seq, "still_open": still_open},
            )
    if resolved:
        logger.info("emergency.resolved", wedding=wedding_id, emergency=emergency_id, still_open=len(still_open))
    return Emergency.objects.select_related("raised_event", "raised_by__user", "resolved_by").get(pk=emergency_id)
