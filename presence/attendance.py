"""Expected attendance: who should be at the venue (or online) when, on a wedding day.

Built from the wedding's ceremony time and timeline (issue 5, part 4); the offsets are settings:

- key people (``Member.is_key_person``: the couple, the planner, the photographer, the officiant)
  at the venue from ``PRESENCE_KEY_PERSON_LEAD_MINUTES`` before the ceremony until
  ``PRESENCE_CEREMONY_MINUTES`` after it starts;
- every vendor with a timeline item assigned, at the venue from ``PRESENCE_VENDOR_LEAD_MINUTES``
  before the item starts until it ends;
- the venue contact (role ``venue``) online all day: the wedding's local date, midnight to midnight.

:func:`wedding_plans` reads what the rules need for several weddings in a bounded number of
queries; everything else here is plain functions over those values and presence values.
"""

from __future__ import annotations

import enum
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings

from presence.state import MemberPresence
from presence.vocabulary import VendorActivity
from wedsync.models import Member, TimelineItem, Wedding, WeddingStatus
from wedsync.models.records import LocationZone
from wedsync.permissions import Role

# Activities a vendor reports while away from the venue: with no zone shared, these say "off site".
_AWAY_ACTIVITIES = frozenset({VendorActivity.EN_ROUTE.value, VendorActivity.DONE.value})
# Weddings that no longer happen (or are over) expect nobody.
_OFF_STATUSES = frozenset({WeddingStatus.CANCELLED.value, WeddingStatus.COMPLETED.value})


@dataclass(frozen=True, slots=True)
class PlannedMember:
    id: int
    role: str
    name: str
    is_key_person: bool


@dataclass(frozen=True, slots=True)
class Assignment:
    member_id: int
    title: str
    starts_at: datetime
    ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class WeddingPlan:
    """What the attendance and alert rules know of one wedding (its active members only)."""

    wedding_id: int
    name: str
    date: date  # local
    time_zone: str
    ceremony_at: datetime  # UTC
    active: bool  # neither cancelled nor completed
    members: tuple[PlannedMember, ...]
    assignments: tuple[Assignment, ...] = ()

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def day_bounds(self) -> tuple[datetime, datetime]:
        """The wedding's local date as a UTC range [start, end): 23 or 25 hours on DST days (in UTC,
        so that subtracting them counts real time, not wall-clock time)."""
        start = datetime.combine(self.date, time.min, tzinfo=self.tz)
        end = datetime.combine(self.date + timedelta(days=1), time.min, tzinfo=self.tz)
        return start.astimezone(UTC), end.astimezone(UTC)

    def member(self, member_id: int) -> PlannedMember | None:
        return next((member for member in self.members if member.id == member_id), None)


class Place(enum.StrEnum):
    VENUE = "venue"  # on site: online and not known to be elsewhere
    ONLINE = "online"  # connected, wherever they are


class Reason(enum.StrEnum):
    KEY_PERSON = "key_person"
    TIMELINE = "timeline"
    VENUE_CONTACT = "venue_contact"


@dataclass(frozen=True, slots=True)
class Expectation:
    member_id: int
    place: Place
    starts_at: datetime
    ends_at: datetime | None  # None: until the item is over, which nobody said
    reason: Reason
    title: str = ""  # the timeline item, for TIMELINE

    def applies_at(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)


@dataclass(frozen=True, slots=True)
class AttendanceRules:
    key_person_lead: timedelta
    vendor_lead: timedelta
    ceremony_length: timedelta

    @classmethod
    def from_settings(cls) -> AttendanceRules:
        return cls(
            key_person_lead=timedelta(minutes=settings.PRESENCE_KEY_PERSON_LEAD_MINUTES),
            vendor_lead=timedelta(minutes=settings.PRESENCE_VENDOR_LEAD_MINUTES),
            ceremony_length=timedelta(minutes=settings.PRESENCE_CEREMONY_MINUTES),
        )


def attendance_expected(*, plan: WeddingPlan, rules: AttendanceRules) -> list[Expectation]:
    """Every expectation of the wedding, earliest first (none for a cancelled or completed one)."""
    if not plan.active:
        return []
    expectations: list[Expectation] = []
    ceremony_end = plan.ceremony_at + rules.ceremony_length
    day_start, day_end = plan.day_bounds()
    for member in plan.members:
        if member.is_key_person:
            expectations.append(
                Expectation(
                    member_id=member.id,
                    place=Place.VENUE,
                    starts_at=plan.ceremony_at - rules.key_person_lead,
                    ends_at=ceremony_end,
                    reason=Reason.KEY_PERSON,
                )
            )
        if member.role == Role.VENUE:
            expectations.append(
                Expectation(
                    member_id=member.id,
                    place=Place.ONLINE,
                    starts_at=day_start,
                    ends_at=day_end,
                    reason=Reason.VENUE_CONTACT,
                )
            )
    vendors = {member.id for member in plan.members if Role(member.role).is_vendor}
    expectations.extend(
        Expectation(
            member_id=item.member_id,
            place=Place.VENUE,
            starts_at=item.starts_at - rules.vendor_lead,
            ends_at=item.ends_at,
            reason=Reason.TIMELINE,
            title=item.title,
        )
        for item in plan.assignments
        if item.member_id in vendors
    )
    expectations.sort(key=lambda e: (e.starts_at, e.member_id, e.reason))
    return expectations


def member_at_venue(presence: MemberPresence | None) -> bool:
    """Whether presence puts the member at the venue: online, and not known to be elsewhere.

    "Elsewhere" is the ``off_site`` zone, or, when no zone is shared, a vendor activity that is
    off site by definition (``en_route``, ``done``). A member who shares neither gets the benefit of
    the doubt: couples and planners rarely set a zone, and an alert for every quiet phone would teach
    people to ignore alerts. Every other zone (parking included) is on the venue's grounds.
    """
    if presence is None or not presence.is_online:
        return False
    if presence.location is not None:
        return presence.location != LocationZone.OFF_SITE.value
    return presence.activity not in _AWAY_ACTIVITIES


def _plan_member(member: Member) -> PlannedMember:
    return PlannedMember(id=member.pk, role=member.role, name=member.name, is_key_person=member.is_key_person)


def wedding_plans(*, wedding_ids: Iterable[int]) -> dict[int, WeddingPlan]:
    """The plans of these weddings, in three queries whatever their number."""
    ids = sorted(set(wedding_ids))
    if not ids:
        return {}
    members: dict[int, list[PlannedMember]] = {wedding_id: [] for wedding_id in ids}
    for member in Member.objects.filter(wedding_id__in=ids, is_active=True).select_related("user"):
        members[member.wedding_id].append(_plan_member(member))
    assignments: dict[int, list[Assignment]] = {wedding_id: [] for wedding_id in ids}
    through = TimelineItem.assigned_vendors.through.objects.filter(
        timelineitem__wedding_id__in=ids, member__is_active=True
    ).values_list(
        "timelineitem__wedding_id",
        "member_id",
        "timelineitem__title",
        "timelineitem__starts_at",
        "timelineitem__ends_at",
    )
    for wedding_id, member_id, title, starts_at, ends_at in through:
        assignments[wedding_id].append(
            Assignment(member_id=member_id, title=title, starts_at=starts_at, ends_at=ends_at)
        )
    return {
        wedding.pk: WeddingPlan(
            wedding_id=wedding.pk,
            name=wedding.name,
            date=wedding.date,
            time_zone=wedding.time_zone,
            ceremony_at=wedding.ceremony_at,
            active=wedding.status not in _OFF_STATUSES,
            members=tuple(members[wedding.pk]),
            assignments=tuple(sorted(assignments[wedding.pk], key=lambda a: (a.starts_at, a.member_id))),
        )
        for wedding in Wedding.objects.filter(pk__in=ids)
    }


def wedding_plan(*, wedding_id: int) -> WeddingPlan | None:
    return wedding_plans(wedding_ids=[wedding_id]).get(wedding_id)
