"""What the coordinators' board shows of each of today's weddings.

Each card is read head first: the stream's seq before anything else, so the board's observer socket
(subscribed ``since`` that seq) is told of every change the card may have missed, and reads it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q

from presence.attendance import (
    AttendanceRules,
    Expectation,
    Place,
    WeddingPlan,
    attendance_expected,
    member_at_venue,
    wedding_plans,
)
from presence.models import Alert, Emergency
from presence.selectors import presence_members
from presence.state import MemberPresence
from realtime.models import Event
from realtime.names import EventType
from realtime.selectors import stream_head
from wedsync.models import TimelineItem, Wedding
from wedsync.permissions import Role
from wedsync.selectors import weddings_overseen

logger = structlog.get_logger(__name__)

NEXT_ITEMS = 3  # timeline items shown: the one under way and the next ones
UNDATED_ITEM_RUNS = timedelta(minutes=30)  # an item without an end counts as under way this long


@dataclass(frozen=True, slots=True)
class BoardPerson:
    """Someone the day depends on: a key person, the venue contact, a vendor due on site."""

    member_id: int
    name: str
    role: str
    state: str  # here, missing, online, away, expected
    detail: str


@dataclass(frozen=True, slots=True)
class BoardAlert:
    id: int
    kind: str
    severity: str
    member: str
    message: str
    raised_at: str  # the wedding's local time
    acknowledged_by: str | None


@dataclass(frozen=True, slots=True)
class BoardEmergency:
    id: int
    message: str
    raised_by: str
    raised_at: str
    location: str | None


@dataclass(frozen=True, slots=True)
class BoardVendor:
    member_id: int
    name: str
    role: str
    activity: str
    eta_minutes: int | None
    at: str


@dataclass(frozen=True, slots=True)
class BoardItem:
    title: str
    starts_at: str
    location: str
    under_way: bool


@dataclass(frozen=True, slots=True)
class BoardCard:
    wedding_id: int
    name: str
    venue: str
    time_zone: str
    local_time: str
    ceremony_at: str
    status: str
    seq: int
    epoch: str
    presence_available: bool
    members_online: int
    members_total: int
    guests_online: int
    people: list[BoardPerson]
    alerts: list[BoardAlert]
    emergencies: list[BoardEmergency]
    vendors: list[BoardVendor]
    next_items: list[BoardItem]

    @property
    def missing(self) -> int:
        return sum(1 for person in self.people if person.state == "missing")


def board_wedding_ids(*, user: AbstractBaseUser | AnonymousUser, now: datetime) -> list[int]:
    """The weddings ``user`` oversees whose day, in their own time zone, is today at ``now``;
    earliest ceremony first."""
    utc_day = now.astimezone(UTC).date()
    candidates = weddings_overseen(user=user).filter(  # type: ignore[arg-type]
        date__range=(utc_day - timedelta(days=1), utc_day + timedelta(days=1))
    )
    return [
        wedding.pk
        for wedding in candidates.order_by("ceremony_at", "pk")
        if now.astimezone(wedding.tz).date() == wedding.date
    ]


def board_card(*, user: AbstractBaseUser | AnonymousUser, wedding_id: int, now: datetime) -> BoardCard | None:
    """The card of one wedding ``user`` oversees; None for any other (or none at all)."""
    wedding = weddings_overseen(user=user).filter(pk=wedding_id).first()  # type: ignore[arg-type]
    if wedding is None:
        return None
    seq, epoch = stream_head(wedding_id=wedding_id)  # first: see the module's docstring
    plan = wedding_plans(wedding_ids=[wedding_id]).get(wedding_id)
    if plan is None:
        return None
    try:
        online: dict[int, MemberPresence] | None = presence_members(wedding_id=wedding_id)
    except Exception:  # the board still shows alerts and the timeline when Redis does not answer
        logger.exception("board.presence_unavailable", wedding=wedding_id)
        online = None
    present = online or {}
    staff = [member for member in plan.members if member.role != Role.GUEST]
    return BoardCard(
        wedding_id=wedding.pk,
        name=wedding.name,
        venue=wedding.venue_name,
        time_zone=wedding.time_zone,
        local_time=_local(now, wedding),
        ceremony_at=_local(wedding.ceremony_at, wedding),
        status=wedding.get_status_display(),
        seq=seq,
        epoch=epoch,
        presence_available=online is not None,
        members_online=sum(1 for member in staff if (p := present.get(member.id)) is not None and p.is_online),
        members_total=len(staff),
        guests_online=sum(1 for p in present.values() if p.role == Role.GUEST and p.is_online),
        people=_people(plan, present, wedding=wedding, now=now),
        alerts=_alerts(wedding),
        emergencies=_emergencies(wedding),
        vendors=_vendors(plan, wedding=wedding),
        next_items=_next_items(wedding, now=now),
    )


def _local(moment: datetime, wedding: Wedding) -> str:
    return moment.astimezone(wedding.tz).strftime("%H:%M")


def _people(
    plan: WeddingPlan, present: dict[int, MemberPresence], *, wedding: Wedding, now: datetime
) -> list[BoardPerson]:
    """Everyone with an expectation today: here or missing while it applies, else when it starts."""
    expectations: dict[int, list[Expectation]] = {}
    for expectation in attendance_expected(plan=plan, rules=AttendanceRules.from_settings()):
        expectations.setdefault(expectation.member_id, []).append(expectation)
    people = []
    for member in plan.members:
        mine = expectations.get(member.id)
        if not mine:
            continue
        presence = present.get(member.id)
        now_due = [e for e in mine if e.applies_at(now)]
        later = [e for e in mine if e.starts_at > now]
        if now_due:
            due = now_due[0]
            met = member_at_venue(presence) if due.place is Place.VENUE else presence is not None and presence.is_online
            state = "here" if met else "missing"
            detail = f"due since {_local(due.starts_at, wedding)}" if due.place is Place.VENUE else "online all day"
        elif later:
            state, detail = "expected", f"due from {_local(later[0].starts_at, wedding)}"
        else:
            state, detail = ("online" if presence is not None and presence.is_online else "away"), "done for the day"
        if presence is not None and presence.battery is not None and presence.battery <= 20 and not presence.charging:
            detail += f", battery {presence.battery} %"
        people.append(BoardPerson(member_id=member.id, name=member.name, role=member.role, state=state, detail=detail))
    order = {"missing": 0, "here": 1, "online": 2, "expected": 3, "away": 4}
    return sorted(people, key=lambda person: (order[person.state], person.role, person.name))


def _alerts(wedding: Wedding) -> list[BoardAlert]:
    alerts = Alert.objects.filter(wedding=wedding, resolved_at__isnull=True).select_related(
        "member__user", "acknowledged_by"
    )
    return [
        BoardAlert(
            id=alert.pk,
            kind=alert.get_kind_display(),
            severity=alert.severity,
            member=alert.member.name if alert.member is not None else "",
            message=alert.message,
            raised_at=_local(alert.raised_at, wedding),
            acknowledged_by=(
                (alert.acknowledged_by.get_full_name() or alert.acknowledged_by.get_username())
                if alert.acknowledged_by is not None
                else ("someone" if alert.acknowledged_at is not None else None)
            ),
        )
        for alert in alerts.order_by("-raised_at", "-pk")
    ]


def _emergencies(wedding: Wedding) -> list[BoardEmergency]:
    emergencies = Emergency.objects.filter(wedding=wedding, resolved_at__isnull=True).select_related(
        "raised_by__user", "raised_event"
    )
    return [
        BoardEmergency(
            id=emergency.pk,
            message=str(emergency.raised_event.data.get("message") or ""),
            raised_by=emergency.raised_by.name if emergency.raised_by is not None else "",
            raised_at=_local(emergency.raised_at, wedding),
            location=emergency.raised_event.data.get("location"),
        )
        for emergency in emergencies.order_by("-raised_at", "-pk")
    ]


def _vendors(plan: WeddingPlan, *, wedding: Wedding) -> list[BoardVendor]:
    """Each vendor's latest ``vendor.status`` of the wedding's day."""
    day_start, _day_end = plan.day_bounds()
    names = {member.id: member for member in plan.members}
    latest: dict[int, BoardVendor] = {}
    statuses = Event.objects.filter(wedding=wedding, type=EventType.VENDOR_STATUS.value, created_at__gte=day_start)
    for sender, data, at in statuses.order_by("-seq").values_list("sender_member_id", "data", "created_at")[:500]:
        member_id = data.get("member") or sender
        member = names.get(member_id)
        if member is None or member_id in latest:
            continue
        latest[member_id] = BoardVendor(
            member_id=member_id,
            name=member.name,
            role=member.role,
            activity=str(data.get("activity", "")).replace("_", " ").capitalize(),
            eta_minutes=data.get("eta_minutes"),
            at=_local(at, wedding),
        )
    return sorted(latest.values(), key=lambda vendor: (vendor.role, vendor.name))


def _next_items(wedding: Wedding, *, now: datetime) -> list[BoardItem]:
    items = TimelineItem.objects.filter(wedding=wedding).filter(
        Q(starts_at__gte=now) | Q(ends_at__gt=now) | Q(ends_at__isnull=True, starts_at__gt=now - UNDATED_ITEM_RUNS)
    )
    return [
        BoardItem(
            title=item.title,
            starts_at=_local(item.starts_at, wedding),
            location=item.get_location_display() if item.location else "",
            under_way=item.starts_at <= now,
        )
        for item in items.order_by("starts_at", "pk")[:NEXT_ITEMS]
    ]
