"""Alert reads: which weddings the rules look at, open alerts, who may acknowledge."""

from __future__ import annotations

import enum
import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from presence.models import Alert, AlertKind
from wedsync.models import Member, Wedding
from wedsync.permissions import Role
from wedsync.selectors import wedding_may_oversee

if TYPE_CHECKING:
    from presence.alerts.rules import AlertRules

# Who acknowledges a wedding's alerts besides staff: the people who run the day.
_ACKNOWLEDGING_ROLES = (Role.PLANNER.value, Role.COUPLE.value)


class AlertState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


def alert_weddings_due(*, now: datetime, rules: AlertRules) -> list[int]:
    """Weddings the rules must look at now: the local date is today, the ceremony is within the
    key-person window (from the first alert step before it to the end of the ceremony), or an
    alert is open (so it can resolve). Bounded by the indexed date column: a wedding whose local
    date is today, or whose ceremony is near, has its date within a day of the UTC dates around now.
    """
    earliest = now - rules.attendance.ceremony_length
    latest = now + rules.watch_before_ceremony
    first_day = earliest.astimezone(UTC).date() - timedelta(days=1)
    last_day = latest.astimezone(UTC).date() + timedelta(days=1)
    due: set[int] = set()
    around = Wedding.objects.filter(date__range=(first_day, last_day)).values_list(
        "pk", "date", "time_zone", "ceremony_at"
    )
    for wedding_id, day, time_zone, ceremony_at in around:
        if earliest <= ceremony_at <= latest or now.astimezone(zoneinfo.ZoneInfo(time_zone)).date() == day:
            due.add(wedding_id)
    open_alerts = Alert.objects.filter(resolved_at__isnull=True).order_by().values_list("wedding_id", flat=True)
    due.update(open_alerts.distinct())
    return sorted(due)


def alerts_open_by_wedding(*, wedding_ids: Iterable[int]) -> dict[int, list[Alert]]:
    by_wedding: dict[int, list[Alert]] = {}
    for alert in Alert.objects.filter(wedding_id__in=list(wedding_ids), resolved_at__isnull=True).select_related(
        "member"
    ):
        by_wedding.setdefault(alert.wedding_id, []).append(alert)
    return by_wedding


def low_battery_recent_by_wedding(
    *, wedding_ids: Iterable[int], since: datetime
) -> dict[int, set[tuple[int | None, str]]]:
    """(member, device) of the low-battery alerts raised after ``since``, open or not: a device is
    told of at most once per throttle window, however its battery wavers around the line."""
    recent: dict[int, set[tuple[int | None, str]]] = {}
    rows = Alert.objects.filter(
        wedding_id__in=list(wedding_ids), kind=AlertKind.LOW_BATTERY, raised_at__gt=since
    ).values_list("wedding_id", "member_id", "device")
    for wedding_id, member_id, device in rows:
        recent.setdefault(wedding_id, set()).add((member_id, device))
    return recent


def alert_may_acknowledge(*, user: User | AnonymousUser, wedding_id: int) -> bool:
    """The staff who oversee the wedding (docs/decisions/0022), and its active planner or couple."""
    if not user.is_authenticated or not user.is_active:
        return False
    if wedding_may_oversee(user=user, wedding_id=wedding_id):
        return True
    return Member.objects.filter(
        user_id=user.pk, wedding_id=wedding_id, is_active=True, role__in=_ACKNOWLEDGING_ROLES
    ).exists()


def wedding_alerts(*, wedding_id: int, state: AlertState = AlertState.OPEN) -> QuerySet[Alert]:
    """A wedding's alerts, newest first, with what their views show."""
    alerts = Alert.objects.filter(wedding_id=wedding_id).select_related("member__user", "acknowledged_by")
    if state is AlertState.OPEN:
        return alerts.filter(resolved_at__isnull=True)
    if state is AlertState.RESOLVED:
        return alerts.filter(resolved_at__isnull=False)
    return alerts
