"""Who may see an event: PROTOCOL.md section 5's audience table, and narrowing it with ``to``.

An audience is a set of roles plus a set of member ids; a member is in it when either matches. It
is resolved once, when the event is stored, and kept with the event, so a live delivery and a replay
a week later answer the same question the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from realtime.names import EventType
from wedsync.models import Member
from wedsync.permissions import Role

_ALL_ROLES = frozenset(role.value for role in Role)
# ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
_MEMBER_ID = re.compile(r"[0-9]{1,18}")
_COUPLE_AND_PLANNER = frozenset({Role.COUPLE.value, Role.PLANNER.value})


class AudienceError(ValueError):
    """A ``to`` entry that cannot be honoured; the message names it."""


@dataclass(frozen=True, slots=True)
class Audience:
    roles: frozenset[str]
    members: frozenset[int]

    def includes(self, *, member_id: int, role: str) -> bool:
        return role in self.roles or member_id in self.members

    def with_member(self, member_id: int | None) -> Audience:
        if member_id is None:
            return self
        return Audience(roles=self.roles, members=self.members | {member_id})

    @classmethod
    def of(cls, *, roles: Iterable[str] = (), members: Iterable[int] = ()) -> Audience:
        return cls(roles=frozenset(roles), members=frozenset(members))

    def as_stored(self) -> tuple[list[str], list[int]]:
        return sorted(self.roles), sorted(self.members)


EVERYONE = Audience.of(roles=_ALL_ROLES)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def audience_default(
    *, event_type: EventType, wedding_id: int, sender: Member | None, data: Mapping[str, Any]
) -> Audience:
    """The default audience of PROTOCOL.md section 5 for this event (reads the database)."""
    concerned = _int_or_none(data.get("member"))
    if event_type in (EventType.CHAT_MESSAGE, EventType.EMERGENCY_ALERT, EventType.EMERGENCY_RESOLVED):
        audience = EVERYONE
    elif event_type is EventType.VENDOR_STATUS:
        audience = Audience.of(roles=_COUPLE_AND_PLANNER)
    elif event_type in (EventType.ALERT_RAISED, EventType.ALERT_RESOLVED):
        audience = Audience.of(roles=_COUPLE_AND_PLANNER).with_member(concerned)
    else:  # record.* events: the sync engine always passes its record's audience
        audience = Audience.of(roles=_COUPLE_AND_PLANNER)
    # The sender's other devices see what they sent.
    return audience.with_member(sender.pk if sender else None)


def audience_narrow(*, default: Audience, to: Iterable[str], wedding_id: int) -> Audience:
    """``to`` (``role:<role>`` / ``member:<id>``) narrowed to what ``default`` allows; never wider.

    A target outside the default audience is dropped; an unknown role or a member of another
    wedding is an :class:`AudienceError`.
    """
    roles: set[str] = set()
    member_ids: set[int] = set()
    for target in to:
        kind, _, value = target.partition(":")
        if kind == "role" and value in _ALL_ROLES:
            roles.add(value)
        elif kind == "member" and _MEMBER_ID.fullmatch(value):
            member_ids.add(int(value))
        else:
            raise AudienceError(f"to: {target!r} is neither role:<role> nor member:<id>")
    found = dict(Member.objects.filter(wedding_id=wedding_id, pk__in=member_ids).values_list("pk", "role"))
    missing = member_ids - set(found)
    if missing:
        raise AudienceError(f"to: member:{min(missing)} is not a member of this wedding")
    narrowed_members = {pk for pk, role in found.items() if default.includes(member_id=pk, role=role)}
    # A role the default reaches only through named members keeps just those members.
    extra_roles = roles - default.roles
    if extra_roles:
        narrowed_members.update(
            Member.objects.filter(wedding_id=wedding_id, role__in=extra_roles, pk__in=default.members).values_list(
                "pk", flat=True
            )
        )
    return Audience.of(roles=roles & default.roles, members=narrowed_members)
