"""What the pages show: a user's weddings, and the boot data of the wedding-day page.

The page's live data (records, presence, events) comes over the API and the socket, each filtered
for the member there; what is read here is only what the page needs to draw itself first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q
from django.utils import timezone

from presence.vocabulary import VendorActivity
from wedsync.models import LocationZone, Member, Wedding
from wedsync.permissions import Permission, Role, role_permission_scope


@dataclass(frozen=True, slots=True)
class MembershipSummary:
    wedding_id: int
    wedding_name: str
    wedding_date: date
    venue_name: str
    role: str
    is_today: bool


def _wedding_today(wedding: Wedding) -> bool:
    return timezone.now().astimezone(wedding.tz).date() == wedding.date


def member_weddings_list(*, user: AbstractBaseUser | AnonymousUser) -> list[MembershipSummary]:
    """The user's active memberships, the nearest wedding day first (past ones last)."""
    if not user.is_authenticated:
        return []
    members = Member.objects.filter(user_id=user.pk, is_active=True).select_related("wedding")
    summaries = [
        MembershipSummary(
            wedding_id=member.wedding_id,
            wedding_name=member.wedding.name,
            wedding_date=member.wedding.date,
            venue_name=member.wedding.venue_name,
            role=member.role,
            is_today=_wedding_today(member.wedding),
        )
        for member in members
    ]
    today = timezone.now().date()
    return sorted(summaries, key=lambda s: (s.wedding_date < today, abs((s.wedding_date - today).days), s.wedding_id))


def wedding_day_boot(*, user: AbstractBaseUser | AnonymousUser, wedding_id: int) -> dict[str, object] | None:
    """What the wedding-day page starts from, or None when the user is no active member of it.

    Guests get the wedding's crew (everyone but other guests) and themselves: enough to name the
    people in the feed and on the timeline, never the guest list.
    """
    if not user.is_authenticated:
        return None
    me = Member.objects.filter(user_id=user.pk, wedding_id=wedding_id, is_active=True).select_related("wedding").first()
    if me is None:
        return None
    wedding = me.wedding
    people = Member.objects.filter(wedding_id=wedding_id, is_active=True).select_related("user")
    if me.role == Role.GUEST:
        people = people.filter(~Q(role=Role.GUEST) | Q(pk=me.pk))
    may = {p.value: role_permission_scope(role=me.role, permission=p).value for p in Permission}
    return {
        "wedding": {
            "id": wedding.pk,
            "name": wedding.name,
            "date": wedding.date.isoformat(),
            "time_zone": wedding.time_zone,
            "venue_name": wedding.venue_name,
            "ceremony_at": wedding.ceremony_at.isoformat(),
            "is_today": _wedding_today(wedding),
        },
        "me": {"member": me.pk, "user": me.user_id, "role": me.role, "name": me.name, "is_vendor": me.is_vendor},
        "may": may,
        "members": [{"id": m.pk, "name": m.name, "role": m.role} for m in people],
        "zones": [{"value": zone.value, "label": zone.label} for zone in LocationZone],
        "activities": [{"value": a.value, "label": a.value.replace("_", " ").capitalize()} for a in VendorActivity],
    }
