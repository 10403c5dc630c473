"""The alert rules as plain functions: a wedding's plan, its live devices and the time in, what is
wrong (findings) and what was checked and found fine out. No database, no Redis: the services
compare the result with the open alerts and write the difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings

from presence.attendance import (
    AttendanceRules,
    Expectation,
    PlannedMember,
    Reason,
    WeddingPlan,
    attendance_expected,
    member_at_venue,
)
from presence.models import Alert, AlertKind, AlertSeverity
from presence.state import DevicePresence, MemberPresence, member_merge
from wedsync.permissions import Role

SEVERITY_RANK = {AlertSeverity.INFO: 1, AlertSeverity.WARNING: 2, AlertSeverity.CRITICAL: 3}
DEVICE_MAX = Alert._meta.get_field("device").max_length or 64


@dataclass(frozen=True, slots=True)
class Subject:
    """What an alert is about: one open alert at most per subject (the database's constraint)."""

    kind: AlertKind
    member_id: int | None
    device: str = ""

    @classmethod
    def of(cls, alert: Alert) -> Subject:
        return cls(kind=AlertKind(alert.kind), member_id=alert.member_id, device=alert.device)


@dataclass(frozen=True, slots=True)
class Finding:
    subject: Subject
    severity: AlertSeverity
    message: str


@dataclass(slots=True)
class Evaluation:
    findings: dict[Subject, Finding] = field(default_factory=dict)
    # Subjects checked and found fine, with the words that say so (an open alert on one resolves).
    fine: dict[Subject, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertRules:
    attendance: AttendanceRules
    # (severity, lead before the ceremony), the least severe and longest lead first.
    key_person_steps: tuple[tuple[AlertSeverity, timedelta], ...]
    low_battery_percent: int
    low_battery_every: timedelta
    renotify_every: timedelta
    renotify_emergency_every: timedelta

    @classmethod
    def from_settings(cls) -> AlertRules:
        steps = settings.PRESENCE_KEY_PERSON_ALERT_MINUTES
        return cls(
            attendance=AttendanceRules.from_settings(),
            key_person_steps=tuple(
                (severity, timedelta(minutes=steps[severity.value]))
                for severity in sorted(AlertSeverity, key=SEVERITY_RANK.__getitem__)
            ),
            low_battery_percent=settings.PRESENCE_LOW_BATTERY_PERCENT,
            low_battery_every=timedelta(seconds=settings.PRESENCE_LOW_BATTERY_ALERT_SECONDS),
            renotify_every=timedelta(seconds=settings.PRESENCE_ALERT_RENOTIFY_SECONDS),
            renotify_emergency_every=timedelta(seconds=settings.PRESENCE_ALERT_RENOTIFY_EMERGENCY_SECONDS),
        )

    @property
    def watch_before_ceremony(self) -> timedelta:
        return self.key_person_steps[0][1]

    def key_person_severity(self, to_ceremony: timedelta) -> AlertSeverity | None:
        """The severity a missing key person's alert has this long before the ceremony."""
        reached = [severity for severity, lead in self.key_person_steps if to_ceremony <= lead]
        return reached[-1] if reached else None


def _who(member: PlannedMember) -> str:
    return f"{member.name} ({member.role})"


def _minutes(delta: timedelta) -> int:
    return max(0, round(delta.total_seconds() / 60))


def _when(plan: WeddingPlan, now: datetime) -> str:
    to_ceremony = plan.ceremony_at - now
    if to_ceremony >= timedelta(0):
        return f"{_minutes(to_ceremony)} min before the ceremony"
    return f"{_minutes(-to_ceremony)} min into the ceremony"


def _key_person_missing(
    *,
    plan: WeddingPlan,
    expectations: Iterable[Expectation],
    members: dict[int, MemberPresence],
    now: datetime,
    rules: AlertRules,
    into: Evaluation,
) -> None:
    severity = rules.key_person_severity(plan.ceremony_at - now)
    for expectation in expectations:
        member = plan.member(expectation.member_id)
        watched = expectation.ends_at is None or now < expectation.ends_at
        if expectation.reason is not Reason.KEY_PERSON or member is None or severity is None or not watched:
            continue
        subject = Subject(kind=AlertKind.KEY_PERSON_MISSING, member_id=member.id)
        presence = members.get(member.id)
        if member_at_venue(presence):
            into.fine[subject] = f"{_who(member)} is at the venue."
        elif presence is None or not presence.is_online:
            into.findings[subject] = Finding(subject, severity, f"{_who(member)} is not online, {_when(plan, now)}.")
        else:
            where = presence.location or presence.activity or "off site"
            into.findings[subject] = Finding(
                subject, severity, f"{_who(member)} is not at the venue ({where}), {_when(plan, now)}."
            )


def _venue_contact_offline(
    *,
    plan: WeddingPlan,
    expectations: Iterable[Expectation],
    members: dict[int, MemberPresence],
    now: datetime,
    into: Evaluation,
) -> None:
    for expectation in expectations:
        member = plan.member(expectation.member_id)
        if expectation.reason is not Reason.VENUE_CONTACT or member is None or not expectation.applies_at(now):
            continue
        subject = Subject(kind=AlertKind.VENUE_CONTACT_OFFLINE, member_id=member.id)
        presence = members.get(member.id)
        if presence is not None and presence.is_online:
            into.fine[subject] = f"{member.name}, the venue contact, is online."
        else:
            into.findings[subject] = Finding(
                subject, AlertSeverity.WARNING, f"{member.name}, the venue contact, is offline on the wedding day."
            )


def _low_battery(*, plan: WeddingPlan, devices: Iterable[DevicePresence], rules: AlertRules, into: Evaluation) -> None:
    # One entry per physical device: a phone reconnecting may briefly hold two sockets under one key.
    newest: dict[tuple[int, str], DevicePresence] = {}
    for device in devices:
        key = (device.member_id, device.device_key[:DEVICE_MAX])
        if key not in newest or (device.updated_at, device.last_seen) > (newest[key].updated_at, newest[key].last_seen):
            newest[key] = device
    for (member_id, device_key), device in sorted(newest.items()):
        member = plan.member(member_id)
        # Guests' phones are their own business; the rules watch the people who run the day.
        if member is None or member.role == Role.GUEST:
            continue
        subject = Subject(kind=AlertKind.LOW_BATTERY, member_id=member_id, device=device_key)
        if device.battery is not None and device.battery < rules.low_battery_percent and device.charging is not True:
            into.findings[subject] = Finding(
                subject,
                AlertSeverity.WARNING,
                f"{_who(member)}'s device is at {device.battery} % and not charging.",
            )
        else:
            into.fine[subject] = f"{_who(member)}'s device is charging or above {rules.low_battery_percent} %."


def members_presence(devices: Iterable[DevicePresence]) -> dict[int, MemberPresence]:
    """Each member's presence merged over its live devices (the rules read devices, not the
    throttled state told to subscribers, so a battery reading is never a step behind)."""
    by_member: dict[int, list[DevicePresence]] = {}
    for device in devices:
        by_member.setdefault(device.member_id, []).append(device)
    merged = {member_id: member_merge(member_devices) for member_id, member_devices in by_member.items()}
    return {member_id: presence for member_id, presence in merged.items() if presence is not None}


def alerts_evaluate_rules(
    *, plan: WeddingPlan, devices: list[DevicePresence], now: datetime, rules: AlertRules
) -> Evaluation:
    """Every rule over one wedding at ``now``."""
    evaluation = Evaluation()
    if not plan.active:
        return evaluation
    expectations = attendance_expected(plan=plan, rules=rules.attendance)
    members = members_presence(devices)
    _key_person_missing(plan=plan, expectations=expectations, members=members, now=now, rules=rules, into=evaluation)
    _venue_contact_offline(plan=plan, expectations=expectations, members=members, now=now, into=evaluation)
    _low_battery(plan=plan, devices=devices, rules=rules, into=evaluation)
    return evaluation
