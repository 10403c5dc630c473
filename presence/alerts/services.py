"""Alert writes: raise, escalate, resolve, re-notify, acknowledge.

Every change that people must hear of stores the alert and publishes its event in one transaction
(``event_publish`` joins it), so there is never an alert without its event nor an event without its
alert. Each change is a conditional write (an INSERT the partial unique constraint may refuse, an
UPDATE whose WHERE names the state it leaves), so beat workers running the rules at once make it
once: the loser's INSERT fails or its UPDATE matches no row, and it publishes nothing.

``raised_at`` and ``raised_event`` name the notice that gave the alert its current severity: an
escalation moves them, so the escalation webhook (monitoring/) counts its grace period from the
moment the alert became critical and looks for a planner's ``ack`` of that notice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from presence.alerts.rules import SEVERITY_RANK, AlertRules, Evaluation, Finding, Subject, alerts_evaluate_rules
from presence.alerts.selectors import (
    alert_may_acknowledge,
    alert_weddings_due,
    alerts_open_by_wedding,
    low_battery_recent_by_wedding,
)
from presence.attendance import WeddingPlan, wedding_plans
from presence.models import Alert, AlertKind, AlertSeverity
from presence.selectors import wedding_emergency_open
from presence.state import DevicePresence
from realtime.models import Event
from realtime.names import EventType
from realtime.protocol import iso
from realtime.services.events import event_publish
from wedsync.models import AuditOutcome, Member
from wedsync.permissions import Role
from wedsync.refusals import Refused
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

logger = structlog.get_logger(__name__)

NOTICE_RAISED = "raised"
NOTICE_ESCALATED = "escalated"
NOTICE_REPEATED = "repeated"
RESOLVED_CLEARED = "cleared"  # the rule checked and the condition is gone
RESOLVED_ENDED = "ended"  # the rule no longer watches it: the window passed, the device left, ...


@dataclass(slots=True)
class AlertCounts:
    raised: int = 0
    escalated: int = 0
    resolved: int = 0
    renotified: int = 0

    def add(self, other: AlertCounts) -> None:
        self.raised += other.raised
        self.escalated += other.escalated
        self.resolved += other.resolved
        self.renotified += other.renotified

    @property
    def total(self) -> int:
        return self.raised + self.escalated + self.resolved + self.renotified


def _member_role(alert: Alert) -> str | None:
    return alert.member.role if alert.member_id is not None and alert.member is not None else None


def _utc_iso(moment: datetime) -> str:
    return iso(moment.astimezone(UTC))


def _alert_view(alert: Alert) -> dict[str, Any]:
    """The fields ``alert.raised`` and ``alert.resolved`` share (docs/protocol.md)."""
    return {
        "alert": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "member": alert.member_id,
        "role": _member_role(alert),
        "device": alert.device or None,
    }


def _message(finding: Finding) -> str:
    return finding.message[: Alert._meta.get_field("message").max_length]


def _publish_raised(alert: Alert, *, notice: str) -> uuid.UUID:
    """Send ``alert.raised`` for the alert as it is now; the event's id."""
    published = event_publish(
        wedding_id=alert.wedding_id,
        event_type=EventType.ALERT_RAISED,
        data={**_alert_view(alert), "message": alert.message, "raised_at": _utc_iso(alert.raised_at), "notice": notice},
    )
    return published.id


def alert_raise(*, wedding_id: int, finding: Finding, now: datetime) -> Alert | None:
    """Store a new open alert and send ``alert.raised``; None when another worker raised the same
    subject first (it sent the event)."""
    subject = finding.subject
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                wedding_id=wedding_id,
                kind=subject.kind,
                severity=finding.severity,
                member_id=subject.member_id,
                device=subject.device,
                message=_message(finding),
                raised_at=now,
                notified_at=now,
            )
            alert.raised_event_id = _publish_raised(alert, notice=NOTICE_RAISED)
            alert.save(update_fields=["raised_event"])
    except IntegrityError:
        # The partial unique constraint: the same subject is open already. Anything else is a bug.
        if _open_alert_of(wedding_id=wedding_id, subject=subject) is None:
            raise
        return None
    logger.info("alert.raised", wedding=wedding_id, alert=alert.pk, kind=alert.kind, severity=alert.severity)
    return alert


def _open_alert_of(*, wedding_id: int, subject: Subject) -> Alert | None:
    member = Q(member__isnull=True) if subject.member_id is None else Q(member_id=subject.member_id)
    return Alert.objects.filter(
        member, wedding_id=wedding_id, kind=subject.kind, device=subject.device, resolved_at__isnull=True
    ).first()


def alert_escalate(*, alert: Alert, finding: Finding, now: datetime) -> bool:
    """Raise an open alert's severity and tell everyone again. The new severity is a new fact: an
    acknowledgement of the milder one no longer covers it."""
    lower = [severity for severity in AlertSeverity if SEVERITY_RANK[severity] < SEVERITY_RANK[finding.severity]]
    message = _message(finding)
    with transaction.atomic():
        changed = Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True, severity__in=lower).update(
            severity=finding.severity,
            message=message,
            raised_at=now,
            notified_at=now,
            acknowledged_at=None,
            acknowledged_by=None,
        )
        if not changed:
            return False
        alert.severity, alert.message, alert.raised_at, alert.notified_at = finding.severity, message, now, now
        alert.acknowledged_at = alert.acknowledged_by = None
        alert.raised_event_id = _publish_raised(alert, notice=NOTICE_ESCALATED)
        alert.save(update_fields=["raised_event"])
    logger.info("alert.escalated", wedding=alert.wedding_id, alert=alert.pk, severity=alert.severity)
    return True


def alert_resolve(*, alert: Alert, reason: str, message: str, now: datetime) -> bool:
    """Close an open alert and send ``alert.resolved``; False when it was closed already."""
    with transaction.atomic():
        if not Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=now):
            return False
        alert.resolved_at = now
        event_publish(
            wedding_id=alert.wedding_id,
            event_type=EventType.ALERT_RESOLVED,
            data={**_alert_view(alert), "message": message, "resolved_at": _utc_iso(now), "reason": reason},
        )
    logger.info("alert.resolved", wedding=alert.wedding_id, alert=alert.pk, reason=reason)
    return True


def alert_renotify(*, alert: Alert, now: datetime, every_before: datetime) -> bool:
    """Tell an open, unacknowledged alert again when it was last told before ``every_before``."""
    with transaction.atomic():
        due = Q(notified_at__lte=every_before) | Q(notified_at__isnull=True)
        changed = Alert.objects.filter(due, pk=alert.pk, resolved_at__isnull=True, acknowledged_at__isnull=True).update(
            notified_at=now
        )
        if not changed:
            return False
        alert.notified_at = now
        _publish_raised(alert, notice=NOTICE_REPEATED)
    return True


def _resolution(alert: Alert, evaluation: Evaluation) -> tuple[str, str]:
    subject = Subject.of(alert)
    if subject in evaluation.fine:
        return RESOLVED_CLEARED, evaluation.fine[subject]
    return RESOLVED_ENDED, {
        AlertKind.KEY_PERSON_MISSING: "The ceremony is over or the member no longer expected: no longer watched.",
        AlertKind.VENUE_CONTACT_OFFLINE: "The wedding day is over or the member no longer the venue contact.",
        AlertKind.LOW_BATTERY: "The device went offline or its member is no longer watched.",
    }.get(AlertKind(alert.kind), "No longer watched.")


def wedding_alerts_sync(
    *,
    plan: WeddingPlan,
    devices: list[DevicePresence],
    now: datetime,
    rules: AlertRules,
    open_alerts: Iterable[Alert] | None = None,
    low_battery_recent: set[tuple[int | None, str]] | None = None,
) -> AlertCounts:
    """Run the rules over one wedding and write the difference with its open alerts: raise what is
    new, escalate what got worse, resolve what cleared, re-notify what nobody acknowledged.

    ``open_alerts`` and ``low_battery_recent`` (member, device of low-battery alerts raised within
    the throttle window) are read here unless the caller read them for many weddings at once.
    """
    counts = AlertCounts()
    evaluation = alerts_evaluate_rules(plan=plan, devices=devices, now=now, rules=rules)
    if open_alerts is None:
        open_alerts = alerts_open_by_wedding(wedding_ids=[plan.wedding_id]).get(plan.wedding_id, [])
    if low_battery_recent is None:
        recent = low_battery_recent_by_wedding(wedding_ids=[plan.wedding_id], since=now - rules.low_battery_every)
        low_battery_recent = recent.get(plan.wedding_id, set())
    still_open: list[Alert] = []
    current: dict[Subject, Alert] = {}
    for alert in open_alerts:
        subject = Subject.of(alert)
        if subject in evaluation.findings:
            current[subject] = alert
            continue
        reason, message = _resolution(alert, evaluation)
        counts.resolved += alert_resolve(alert=alert, reason=reason, message=message, now=now)
    for subject, finding in evaluation.findings.items():
        existing = current.get(subject)
        if existing is None:
            throttled = subject.kind is AlertKind.LOW_BATTERY and (subject.member_id, subject.device) in (
                low_battery_recent
            )
            if not throttled and alert_raise(wedding_id=plan.wedding_id, finding=finding, now=now) is not None:
                counts.raised += 1
        elif SEVERITY_RANK[finding.severity] > SEVERITY_RANK[AlertSeverity(existing.severity)]:
            counts.escalated += alert_escalate(alert=existing, finding=finding, now=now)
        else:
            still_open.append(existing)
    counts.renotified += _renotify_due(wedding_id=plan.wedding_id, alerts=still_open, now=now, rules=rules)
    return counts


def _renotify_due(*, wedding_id: int, alerts: list[Alert], now: datetime, rules: AlertRules) -> int:
    def told_before(every_before: datetime) -> list[Alert]:
        return [
            alert
            for alert in alerts
            if alert.acknowledged_at is None and (alert.notified_at is None or alert.notified_at <= every_before)
        ]

    # Only a wedding with something due at the faster pace asks whether it is in emergency mode.
    candidates = told_before(now - min(rules.renotify_emergency_every, rules.renotify_every))
    if not candidates:
        return 0
    every = rules.renotify_emergency_every if wedding_emergency_open(wedding_id=wedding_id) else rules.renotify_every
    return sum(alert_renotify(alert=alert, now=now, every_before=now - every) for alert in told_before(now - every))


def alerts_evaluate(
    *,
    now: datetime,
    devices_of: Callable[..., list[DevicePresence]],
    rules: AlertRules | None = None,
) -> AlertCounts:
    """The beat task's work: every wedding whose day it is, whose ceremony is near, or that has
    open alerts. Reads are batched over the weddings; ``devices_of(wedding_id=...)`` gives each
    wedding's live devices. One wedding failing (Redis, a bug) does not stop the others."""
    rules = rules or AlertRules.from_settings()
    wedding_ids = alert_weddings_due(now=now, rules=rules)
    plans = wedding_plans(wedding_ids=wedding_ids)
    open_alerts = alerts_open_by_wedding(wedding_ids=plans)
    recent = low_battery_recent_by_wedding(wedding_ids=plans, since=now - rules.low_battery_every)
    counts = AlertCounts()
    for wedding_id, plan in sorted(plans.items()):
        try:
            counts.add(
                wedding_alerts_sync(
                    plan=plan,
                    devices=devices_of(wedding_id=wedding_id),
                    now=now,
                    rules=rules,
                    open_alerts=open_alerts.get(wedding_id, []),
                    low_battery_recent=recent.get(wedding_id, set()),
                )
            )
        except Exception:
            logger.exception("alerts.wedding_failed", wedding=wedding_id)
    return counts


# --- Acknowledging --------------------------------------------------------------------------------


def alert_access_check(
    *, user: User | AnonymousUser, wedding_id: int, op: str, target: str, client: ClientInfo | None = None
) -> None:
    """Refuse (audited) anyone but staff and the wedding's planner or couple: :class:`Refused`."""
    if alert_may_acknowledge(user=user, wedding_id=wedding_id):
        return
    reason = "Only staff and the wedding's planner or couple may do that."
    audit_record(
        action=AuditAction.ALERT_REFUSE,
        outcome=AuditOutcome.REFUSED,
        actor=user,
        wedding_id=wedding_id,
        target=target[:200],
        client=client,
        details={"op": op, "reason": reason},
    )
    raise Refused(code="forbidden", message=reason)


def alert_acknowledge(
    *, wedding_id: int, alert_id: int, user: User | AnonymousUser, client: ClientInfo | None = None
) -> Alert:
    """Acknowledge an alert for staff or the wedding's planner or couple (idempotent: the first
    acknowledgement stays). Raises :class:`Refused` (``forbidden``, audited; ``not_found``)."""
    alert_access_check(user=user, wedding_id=wedding_id, op="ack", target=f"alert:{alert_id}", client=client)
    alert = Alert.objects.filter(pk=alert_id, wedding_id=wedding_id).first()
    if alert is None:
        raise Refused(code="not_found", message=f"There is no alert {alert_id} in this wedding.")
    now = timezone.now()
    acknowledged_by = user if isinstance(user, User) else None
    if Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=now, acknowledged_by=acknowledged_by
    ):
        audit_record(
            action=AuditAction.ALERT_ACK,
            outcome=AuditOutcome.SUCCESS,
            actor=user,
            wedding_id=wedding_id,
            target=f"alert:{alert.pk}",
            client=client,
            details={"kind": alert.kind, "severity": alert.severity},
        )
        alert.refresh_from_db()
    return alert


def alert_acknowledge_by_event(*, event: Event, member: Member) -> bool:
    """A planner's ``ack`` of an ``alert.raised`` event acknowledges the alert it told of (any
    notice of it: first, escalated or repeated). True when that acknowledged it now."""
    if event.type != EventType.ALERT_RAISED or member.role != Role.PLANNER:
        return False
    alert_id = event.data.get("alert") if isinstance(event.data, dict) else None
    if not isinstance(alert_id, int) or isinstance(alert_id, bool):
        return False
    # An ack of a notice older than the alert's current severity does not acknowledge the new one.
    severity = event.data.get("severity")
    changed = Alert.objects.filter(
        pk=alert_id, wedding_id=event.wedding_id, severity=severity, acknowledged_at__isnull=True
    ).update(acknowledged_at=timezone.now(), acknowledged_by_id=member.user_id)
    if changed:
        audit_record(
            action=AuditAction.ALERT_ACK,
            outcome=AuditOutcome.SUCCESS,
            actor=member.user,
            wedding_id=event.wedding_id,
            target=f"alert:{alert_id}",
            details={"via": "ack", "seq": event.seq, "member": member.pk},
        )
    return bool(changed)
