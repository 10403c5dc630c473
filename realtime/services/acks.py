"""The ``ack`` op: a member confirms an emergency or critical event reached them."""

from __future__ import annotations

from django.utils import timezone

from presence.alerts.services import alert_acknowledge_by_event
from realtime.models import Event, EventAck
from realtime.names import Priority
from wedsync.models import Member
from wedsync.refusals import Refused


def event_ack(*, user_id: int, wedding_id: int, seq: int) -> bool:
    """Record the acknowledgement (idempotent); True when it is new. Refuses events that do not
    exist, are not emergency or critical, or are not for this member (:class:`Refused`)."""
    member = Member.objects.filter(user_id=user_id, wedding_id=wedding_id, is_active=True).first()
    if member is None:
        raise Refused(code="forbidden", message="You are not a member of this wedding.")
    event = Event.objects.filter(wedding_id=wedding_id, seq=seq).first()
    if event is None:
        raise Refused(code="not_found", message=f"There is no event {seq} in this wedding.")
    if event.priority < Priority.CRITICAL:
        raise Refused(code="invalid", message="Only emergency and critical events are acknowledged.")
    if member.role not in event.audience_roles and member.pk not in event.audience_members:
        raise Refused(code="forbidden", message="That event was not for you.")
    _ack, created = EventAck.objects.get_or_create(
        event=event, member=member, defaults={"acknowledged_at": timezone.now()}
    )
    if created:
        # A planner's ack of an alert.raised acknowledges the alert itself (presence decides).
        alert_acknowledge_by_event(event=event, member=member)
    return created
