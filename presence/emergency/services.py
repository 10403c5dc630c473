"""Emergency writes: open (with the ``emergency.alert`` that raised it) and resolve.

Opening happens inside the transaction that stores the alert (:class:`EmergencyAlarmGate`, the
alert's publish gate, admits it under the wedding's stream lock, then records it),
so there is never an emergency without its alert nor an alert that opened nothing. A member's
``emergency.alert`` opens its own row unless an emergency that member raised is still open: then
the alarm is a repeat, stored and sent like any alert but marked as an update of the open one
(``data.emergency``, ``data.alert_seq``, ``data.repeat``), which opens nothing, is not escalated and
is not re-sent. A member opens at most ``PRESENCE_EMERGENCY_NEW_PER_MEMBER`` emergencies per
``PRESENCE_EMERGENCY_NEW_WINDOW_SECONDS``; past that the alarm is refused ``rate_limited`` and
audited. The wedding is in emergency mode while any row is open (decision 0011).

Resolving takes the wedding's stream lock before anything else, the lock every publish takes: a
vendor's widened publish decides its reach under that lock (realtime/services/events.py), so it is
either stored before ``emergency.resolved`` (and widened) or after it (and not).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from presence.emergency.selectors import (
    emergencies_open_ids,
    emergencies_raised_since,
    emergency_may_resolve,
    emergency_open_raised_by,
    emergency_resolver_view,
)
from presence.models import Emergency
from realtime.names import EMERGENCY_REPEAT_FIELD, EventType
from realtime.protocol import iso
from realtime.services.events import PublishRefused, event_publish, wedding_stream_lock
from wedsync.models import AuditOutcome, Member
from wedsync.refusals import Refused
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

logger = structlog.get_logger(__name__)


class EmergencyRefused(Refused):
    """A refused resolution (the alarm's own refusal is the publish's)."""


@dataclass(frozen=True, slots=True)
class EmergencyAlarm:
    """What a member's ``emergency.alert`` will be, decided under the wedding's stream lock."""

    repeat_of: Emergency | None  # the member's open emergency this alarm updates; None opens a new one

    def event_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """The alert's ``data`` as stored and sent: a repeat names what it updates (the client's
        schema refuses these fields, so only the server sets them)."""
        if self.repeat_of is None:
            return data
        return {
            **data,
            "emergency": self.repeat_of.pk,
            "alert_seq": self.repeat_of.raised_event.seq,
            EMERGENCY_REPEAT_FIELD: self.repeat_of.repeats + 1,
        }

    def record(self, *, event_id: uuid.UUID, sender: Member) -> None:
        emergency_alarm_record(alarm=self, event_id=event_id, raised_by=sender)


class EmergencyAlarmGate:
    """The ``emergency.alert``'s publish gate (realtime.services.publish_hooks), registered by
    presence's AppConfig."""

    def admit(self, *, member: Member) -> EmergencyAlarm:
        return emergency_alarm_admit(member=member)

    def refusal_audit(self, *, member: Member, refused: PublishRefused, client: ClientInfo | None) -> None:
        emergency_alarm_refusal_audit(member=member, refused=refused, client=client)


def emergency_alarm_admit(*, member: Member, now: datetime | None = None) -> EmergencyAlarm:
    """Whether the member's alarm repeats their open emergency or opens a new one, or
    :class:`PublishRefused` (``rate_limited``, with ``retry_after``) when they opened
    ``PRESENCE_EMERGENCY_NEW_PER_MEMBER`` already in the window.

    Call it inside the alarm's transaction after :func:`wedding_stream_lock`: every alarm and every
    resolution of the wedding is decided under that lock, so the open row and the count it reads
    stay true until the alarm is stored, on whichever node.
    """
    open_emergency = emergency_open_raised_by(wedding_id=member.wedding_id, member_id=member.pk)
    if open_emergency is not None:
        return EmergencyAlarm(repeat_of=open_emergency)
    now = now or timezone.now()
    window = timedelta(seconds=settings.PRESENCE_EMERGENCY_NEW_WINDOW_SECONDS)
    raised = emergencies_raised_since(member_id=member.pk, since=now - window)
    limit = settings.PRESENCE_EMERGENCY_NEW_PER_MEMBER
    if len(raised) >= limit:
        # The oldest of them leaving the window makes room for one more.
        retry_after = max((raised[-limit] + window - now).total_seconds(), 0.1)
        raise PublishRefused(
            code="rate_limited",
            message=(
                f"You raised {len(raised)} emergencies in the last "
                f"{settings.PRESENCE_EMERGENCY_NEW_WINDOW_SECONDS} seconds: wait, or call the planner."
            ),
            retry_after=round(retry_after, 1),
        )
    return EmergencyAlarm(repeat_of=None)


def emergency_alarm_record(*, alarm: EmergencyAlarm, event_id: uuid.UUID, raised_by: Member) -> Emergency:
    """After the alarm's event is stored, in its transaction: open its emergency, or count the repeat
    on the emergency it updates."""
    if alarm.repeat_of is None:
        return emergency_open(wedding_id=raised_by.wedding_id, event_id=event_id, raised_by=raised_by)
    emergency = alarm.repeat_of
    Emergency.objects.filter(pk=emergency.pk).update(repeats=F("repeats") + 1, repeated_at=timezone.now())
    logger.info("emergency.repeated", wedding=emergency.wedding_id, emergency=emergency.pk, member=raised_by.pk)
    return emergency


def emergency_alarm_refusal_audit(*, member: Member, refused: PublishRefused, client: ClientInfo | None) -> None:
    """A refused alarm (one new emergency too many) is audited per refusal: the member is known."""
    audit_record(
        action=AuditAction.EMERGENCY_REFUSE,
        outcome=AuditOutcome.REFUSED,
        actor=member.user,
        wedding_id=member.wedding_id,
        target=f"member:{member.pk}",
        client=client,
        details={
            "op": "open",
            "reason": refused.code,
            "member": member.pk,
            "role": member.role,
            "limit": settings.PRESENCE_EMERGENCY_NEW_PER_MEMBER,
            "window_seconds": settings.PRESENCE_EMERGENCY_NEW_WINDOW_SECONDS,
            "retry_after": refused.retry_after,
        },
    )


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
