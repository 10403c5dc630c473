"""Named people the tests talk about, so a test reads like the wedding day it describes.

Ana and Ben are the couple, Priya plans, Victor runs the venue, Paula photographs, Carmen caters,
Olu officiates and Gil is a guest. Every role of PROTOCOL.md section 5 is present.

Staff: Cora coordinates for an agency (staff scope, docs/decisions/0022); Sam is a superuser.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from tests.factories import MemberFactory, UserFactory, WeddingFactory
from wedsync.models import Agency, Member, Wedding
from wedsync.permissions import KEY_PERSON_ROLES, Role
from wedsync.services.agencies import agency_coordinator_add


@dataclass(frozen=True)
class WeddingParty:
    wedding: Wedding
    ana: Member  # couple
    ben: Member  # couple
    priya: Member  # planner
    victor: Member  # venue
    paula: Member  # photographer
    vik: Member  # videographer
    carmen: Member  # caterer
    flora: Member  # florist
    miles: Member  # musician
    olu: Member  # officiant
    gil: Member  # guest

    def by_role(self, role: Role) -> Member:
        return next(member for member in self.members if member.role == role)

    @property
    def members(self) -> list[Member]:
        return [getattr(self, name) for name in self.__dataclass_fields__ if name != "wedding"]


def make_wedding_party(**wedding_fields: object) -> WeddingParty:
    wedding = WeddingFactory(**wedding_fields)
    slug = wedding.slug

    def member(name: str, role: Role) -> Member:
        user = UserFactory(username=f"{name}-{slug}", first_name=name.capitalize())
        return MemberFactory(user=user, wedding=wedding, role=role.value, is_key_person=role in KEY_PERSON_ROLES)

    return WeddingParty(
        wedding=wedding,
        ana=member("ana", Role.COUPLE),
        ben=member("ben", Role.COUPLE),
        priya=member("priya", Role.PLANNER),
        victor=member("victor", Role.VENUE),
        paula=member("paula", Role.PHOTOGRAPHER),
        vik=member("vik", Role.VIDEOGRAPHER),
        carmen=member("carmen", Role.CATERER),
        flora=member("flora", Role.FLORIST),
        miles=member("miles", Role.MUSICIAN),
        olu=member("olu", Role.OFFICIANT),
        gil=member("gil", Role.GUEST),
    )


def make_coordinator(*weddings: Wedding, name: str = "cora", agency: str | None = None) -> User:
    """A coordinator (staff, in the coordinators' group) of an agency that holds ``weddings``."""
    user = UserFactory(username=name, first_name=name.capitalize())
    held_by, _created = Agency.objects.get_or_create(name=agency or f"{name.capitalize()}'s agency")
    agency_coordinator_add(agency=held_by, user=user)
    Wedding.objects.filter(pk__in=[wedding.pk for wedding in weddings]).update(agency=held_by)
    for wedding in weddings:
        wedding.agency = held_by
    return user


def make_superuser(name: str = "sam") -> User:
    user = UserFactory(username=name, first_name=name.capitalize())
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    user.refresh_from_db()
    return user
