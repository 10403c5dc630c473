"""Named people the tests talk about, so a test reads like the wedding day it describes.

Ana and Ben are the couple, Priya plans, Victor runs the venue, Paula photographs, Carmen caters,
Olu officiates and Gil is a guest. Every role of PROTOCOL.md section 5 is present.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.factories import MemberFactory, UserFactory, WeddingFactory
from wedsync.models import Member, Wedding
from wedsync.permissions import KEY_PERSON_ROLES, Role


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
