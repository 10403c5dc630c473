"""The demo seed: weddings with a member of every role, for trying the service and for load tests.

Idempotent: weddings are found by slug and users by username, so running it again updates dates
and passwords and issues fresh tokens without creating duplicates. Built with bulk queries so that
50 weddings x 200 guests take seconds, not minutes.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from wedsync.models import (
    Agency,
    LocationZone,
    Member,
    Rsvp,
    Task,
    TimelineItem,
    UserTokenGeneration,
    Wedding,
    WeddingStatus,
)
from wedsync.permissions import KEY_PERSON_ROLES, Role
from wedsync.services.agencies import agency_coordinator_add
from wedsync.services.auth import access_token_issue

DEMO_PASSWORD = "wedsync-demo-2026"
DEMO_ADMIN_USERNAME = "demo-admin"
DEMO_COORDINATOR_USERNAME = "demo-coordinator"
DEMO_AGENCY_NAME = "Luz Weddings (demo)"
_CEREMONY_LOCAL_TIME = time(15, 0)

# Who each wedding has besides its guests; the couple are two people.
_CREW: tuple[tuple[str, Role, str, str], ...] = (
    ("couple1", Role.COUPLE, "Ana", "Silva"),
    ("couple2", Role.COUPLE, "Ben", "Carter"),
    ("planner", Role.PLANNER, "Priya", "Nair"),
    ("venue", Role.VENUE, "Victor", "Hale"),
    ("photographer", Role.PHOTOGRAPHER, "Paula", "Moreno"),
    ("videographer", Role.VIDEOGRAPHER, "Vik", "Lund"),
    ("caterer", Role.CATERER, "Carmen", "Ruiz"),
    ("florist", Role.FLORIST, "Flora", "Baker"),
    ("musician", Role.MUSICIAN, "Miles", "Quinn"),
    ("officiant", Role.OFFICIANT, "Olu", "Adeyemi"),
)
# The vendor roles that may change the timeline, in the order ``editors`` adds assistants of them.
_EDITOR_ROLES: tuple[Role, ...] = (
    Role.VENUE,
    Role.PHOTOGRAPHER,
    Role.VIDEOGRAPHER,
    Role.CATERER,
    Role.FLORIST,
    Role.MUSICIAN,
)
# The demo's timeline: (title, start and end in minutes from the ceremony, zone, vendors by crew key).
_TIMELINE_PLAN: tuple[tuple[str, int, int, LocationZone, tuple[str, ...]], ...] = (
    ("Florist setup", -180, -120, LocationZone.CEREMONY_AREA, ("florist",)),
    ("Getting ready photos", -150, -60, LocationZone.BRIDAL_SUITE, ("photographer", "videographer")),
    ("Ceremony", 0, 40, LocationZone.CEREMONY_AREA, ("officiant", "musician", "photographer", "videographer")),
    ("Cocktail hour", 45, 105, LocationZone.COCKTAIL_AREA, ("caterer", "musician")),
    ("Reception dinner", 120, 240, LocationZone.RECEPTION_HALL, ("caterer", "venue", "photographer")),
)
DEMO_TIMELINE_ITEMS = len(_TIMELINE_PLAN)


@dataclass(frozen=True, slots=True)
class DemoMember:
    member_id: int
    user_id: int
    role: str
    username: str
    password: str
    token: str


@dataclass(frozen=True, slots=True)
class DemoTimelineItem:
    item_id: int
    version: int
    assigned_vendors: list[int]


@dataclass(frozen=True, slots=True)
class DemoWedding:
    wedding: Wedding
    members: list[DemoMember]
    timeline: list[DemoTimelineItem]


def _schedule(
    *, tz: zoneinfo.ZoneInfo, now: datetime, today: bool, ceremony_in: int | None
) -> tuple[datetime, datetime]:
    """(ceremony_at, local date as datetime) for the seed's flags."""
    if ceremony_in is not None:
        ceremony = (now + timedelta(minutes=ceremony_in)).replace(microsecond=0)
    else:
        local_today = now.astimezone(tz).date()
        day = local_today if today else local_today + timedelta(days=(5 - local_today.weekday()) % 7 or 7)
        ceremony = datetime.combine(day, _CEREMONY_LOCAL_TIME, tzinfo=tz)
    return ceremony.astimezone(zoneinfo.ZoneInfo("UTC")), ceremony.astimezone(tz)


def _ensure_users(specs: list[tuple[str, str, str]], password_hash: str) -> dict[str, User]:
    """Users by username, created or given the demo password; ``specs`` are (username, first, last)."""
    user_model = get_user_model()
    usernames = [username for username, _first, _last in specs]
    user_model.objects.bulk_create(
        [
            user_model(username=username, first_name=first, last_name=last, password=password_hash)
            for username, first, last in specs
        ],
        ignore_conflicts=True,
    )
    user_model.objects.filter(username__in=usernames).update(password=password_hash, is_active=True)
    return {user.username: user for user in user_model.objects.filter(username__in=usernames)}


def _seed_records(*, wedding: Wedding, members: dict[str, Member], timeline_items: int) -> None:
    """A timeline and a task list, created once per wedding; a timeline shorter than
    ``timeline_items`` is topped up with generated items (load tests)."""
    start = wedding.ceremony_at
    if not wedding.timeline_items.exists():
        for title, begin, end, zone, vendors in _TIMELINE_PLAN[:timeline_items]:
            item = TimelineItem.objects.create(
                wedding=wedding,
                title=title,
                starts_at=start + timedelta(minutes=begin),
                ends_at=start + timedelta(minutes=end),
                location=zone,
            )
            item.assigned_vendors.set([members[key] for key in vendors])
    if not wedding.tasks.exists():
        Task.objects.bulk_create(
            [
                Task(
                    wedding=wedding,
                    title="Confirm final guest count with caterer",
                    assignee=members["planner"],
                    due=start - timedelta(days=3),
                ),
                Task(
                    wedding=wedding,
                    title="Deliver shot list",
                    assignee=members["photographer"],
                    due=start - timedelta(days=1),
                ),
                Task(
                    wedding=wedding, title="Sound check", assignee=members["musician"], due=start - timedelta(hours=2)
                ),
            ]
        )
    existing = wedding.timeline_items.count()
    if existing >= timeline_items:
        return
    vendor_members = sorted((m for m in members.values() if Role(m.role).is_vendor), key=lambda m: m.pk)
    items = TimelineItem.objects.bulk_create(
        [
            TimelineItem(
                wedding=wedding,
                title=f"Moment {number + 1}",
                starts_at=start + timedelta(minutes=5 * number),
                ends_at=start + timedelta(minutes=5 * number + 5),
                location=LocationZone.RECEPTION_HALL,
            )
            for number in range(existing, timeline_items)
        ]
    )
    # Two vendors per generated item, in turn, so that every vendor is in some items' audience.
    through = TimelineItem.assigned_vendors.through
    through.objects.bulk_create(
        [
            through(timelineitem_id=item.pk, member_id=vendor_members[(2 * index + offset) % len(vendor_members)].pk)
            for index, item in enumerate(items)
            for offset in range(min(2, len(vendor_members)))
        ]
    )


def _timeline_of(wedding: Wedding) -> list[DemoTimelineItem]:
    through = TimelineItem.assigned_vendors.through
    assigned: dict[int, list[int]] = {}
    for item_id, member_id in through.objects.filter(timelineitem__wedding=wedding).values_list(
        "timelineitem_id", "member_id"
    ):
        assigned.setdefault(item_id, []).append(member_id)
    return [
        DemoTimelineItem(item_id=pk, version=version, assigned_vendors=sorted(assigned.get(pk, [])))
        for pk, version in TimelineItem.objects.filter(wedding=wedding).order_by("pk").values_list("pk", "version")
    ]


def demo_seed(
    *,
    weddings: int = 1,
    guests: int = 3,
    today: bool = False,
    ceremony_in: int | None = None,
    time_zone: str = "Europe/London",
    password: str = DEMO_PASSWORD,
    token_lifetime: timedelta | None = None,
    with_admin: bool = False,
    only_if_empty: bool = False,
    editors: int = 0,
    timeline_items: int = DEMO_TIMELINE_ITEMS,
) -> list[DemoWedding]:
    """Create or refresh ``weddings`` demo weddings, each with every role and ``guests`` guests,
    all in the demo agency.

    ``editors`` adds that many vendor assistants per wedding (venue, photographer, videographer,
    caterer, florist, musician in turn: roles that may change the timeline) and ``timeline_items``
    sets the timeline's length (generated items past the demo's five), both for load tests.

    ``with_admin`` also makes the ``demo-admin`` superuser, who sees every wedding, and the
    ``demo-coordinator``, a staff user of the demo agency who sees its weddings only, both with the
    demo password (development only: the command passes DEBUG). ``only_if_empty`` does nothing
    when any wedding exists.
    """
    if only_if_empty and Wedding.objects.exists():
        return []
    tz = zoneinfo.ZoneInfo(time_zone)
    now = timezone.now()
    ceremony_at, local_ceremony = _schedule(tz=tz, now=now, today=today, ceremony_in=ceremony_in)
    password_hash = make_password(password)  # hashed once: hashing per user would take minutes
    results: list[DemoWedding] = []
    with transaction.atomic():
        agency, _created = Agency.objects.get_or_create(name=DEMO_AGENCY_NAME)
        if with_admin:
            staff = _ensure_users(
                [(DEMO_ADMIN_USERNAME, "Demo", "Admin"), (DEMO_COORDINATOR_USERNAME, "Cora", "Mendes")], password_hash
            )
            get_user_model().objects.filter(pk=staff[DEMO_ADMIN_USERNAME].pk).update(is_staff=True, is_superuser=True)
            agency_coordinator_add(agency=agency, user=staff[DEMO_COORDINATOR_USERNAME])
        for number in range(1, weddings + 1):
            wedding, _created = Wedding.objects.update_or_create(
                slug=f"demo-{number}",
                defaults={
                    "name": f"Demo wedding {number}: Ana & Ben",
                    "date": local_ceremony.date(),
                    "time_zone": time_zone,
                    "venue_name": "Quinta da Luz",
                    "venue_address": "Estrada da Luz 12, Sintra",
                    "ceremony_at": ceremony_at,
                    "status": WeddingStatus.CONFIRMED,
                    "agency": agency,
                },
            )
            prefix = f"demo{number}"
            specs = [(f"{prefix}-{key}", first, last) for key, _role, first, last in _CREW]
            specs += [
                (f"{prefix}-assistant{index:03d}", "Assistant", f"{index:03d}") for index in range(1, editors + 1)
            ]
            specs += [(f"{prefix}-guest{index:03d}", "Guest", f"{index:03d}") for index in range(1, guests + 1)]
            users = _ensure_users(specs, password_hash)
            roles = {f"{prefix}-{key}": role for key, role, _first, _last in _CREW}
            crew = set(roles)  # key people are the crew, not their assistants
            roles.update(
                {
                    f"{prefix}-assistant{index:03d}": _EDITOR_ROLES[(index - 1) % len(_EDITOR_ROLES)]
                    for index in range(1, editors + 1)
                }
            )
            Member.objects.bulk_create(
                [
                    Member(
                        user=users[username],
                        wedding=wedding,
                        role=roles.get(username, Role.GUEST),
                        is_key_person=username in crew and roles[username] in KEY_PERSON_ROLES,
                        vendor_company=f"{first} {last} Studio" if roles.get(username, Role.GUEST).is_vendor else "",
                    )
                    for username, first, last in specs
                ],
                ignore_conflicts=True,
            )
            wedding_members = {
                member.user.username: member
                for member in Member.objects.filter(wedding=wedding, user__username__in=users).select_related("user")
            }
            Member.objects.filter(pk__in=[m.pk for m in wedding_members.values()]).update(is_active=True)
            Rsvp.objects.bulk_create(
                [Rsvp(guest=member) for member in wedding_members.values() if member.role == Role.GUEST],
                ignore_conflicts=True,
            )
            _seed_records(
                wedding=wedding,
                members={username.removeprefix(f"{prefix}-"): m for username, m in wedding_members.items()},
                timeline_items=timeline_items,
            )
            generations = dict(
                UserTokenGeneration.objects.filter(user__in=users.values()).values_list("user_id", "generation")
            )
            results.append(
                DemoWedding(
                    wedding=wedding,
                    members=[
                        DemoMember(
                            member_id=member.pk,
                            user_id=member.user_id,
                            role=member.role,
                            username=username,
                            password=password,
                            token=access_token_issue(
                                user=member.user, lifetime=token_lifetime, generation=generations.get(member.user_id, 0)
                            ),
                        )
                        for username, member in sorted(wedding_members.items(), key=lambda item: item[1].pk)
                    ],
                    timeline=_timeline_of(wedding),
                )
            )
    return results
