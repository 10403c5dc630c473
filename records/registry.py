"""The record kinds the sync engine serves, and what it must know about each (docs/decisions/0027).

A kind names its model, the schema of the changes a client may send, the fields some roles may not
see, its default strategy, who sees it (its audience) and who may change what. A kind added later
registers here and the engine, the socket op, the REST API and the admin serve it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from django.contrib.auth.models import User
from django.db import models
from django.db.models import Prefetch, prefetch_related_objects

from records.models import RecordKindName, Strategy
from wedsync.models import Member, Rsvp, Task, TimelineItem
from wedsync.models.records import LocationZone, RsvpStatus, TaskStatus
from wedsync.permissions import Permission, Role, role_has_permission, roles_with_permission

AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
MemberRef = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]

# PROTOCOL.md section 7: couple > planner > venue > other vendors > guest.
_RANKS: dict[str, int] = {Role.COUPLE.value: 5, Role.PLANNER.value: 4, Role.VENUE.value: 3, Role.GUEST.value: 1}
VENDOR_RANK = 2


def role_rank(role: str) -> int:
    return _RANKS.get(role, VENDOR_RANK)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: a member of the wedding, or staff who oversee it (a planner's view and rank)."""

    user: User
    wedding_id: int
    role: str
    member: Member | None

    @property
    def rank(self) -> int:
        return role_rank(self.role)

    @property
    def member_id(self) -> int | None:
        return self.member.pk if self.member is not None else None

    def may(self, permission: Permission, *, own: bool = False) -> bool:
        return role_has_permission(role=self.role, permission=permission, own=own)


class RecordInvalid(ValueError):
    """Changes that fit the schema but not the wedding (a vendor of another wedding, an end before
    the start); the message names the field."""


def _wedding_members(wedding_id: int, ids: Iterable[int]) -> dict[int, str]:
    return dict(
        Member.objects.filter(wedding_id=wedding_id, is_active=True, pk__in=list(ids)).values_list("pk", "role")
    )


def _required(record: models.Model, *names: str) -> None:
    """A new record's fields it cannot be without (every field of the changes is optional)."""
    for name in names:
        if getattr(record, name) in (None, ""):
            raise RecordInvalid(f"{name}: required")


class _Changes(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class TimelineChanges(_Changes):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    starts_at: AwareTime | msgspec.UnsetType = msgspec.UNSET
    ends_at: AwareTime | msgspec.UnsetType | None = msgspec.UNSET
    location: LocationZone | msgspec.UnsetType | None = msgspec.UNSET
    notes: Annotated[str, msgspec.Meta(max_length=4000)] | msgspec.UnsetType = msgspec.UNSET
    ceremony_notes: Annotated[str, msgspec.Meta(max_length=4000)] | msgspec.UnsetType = msgspec.UNSET
    assigned_vendors: Annotated[list[MemberRef], msgspec.Meta(max_length=50)] | msgspec.UnsetType = msgspec.UNSET


class TaskChanges(_Changes):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    assignee: MemberRef | msgspec.UnsetType | None = msgspec.UNSET
    status: TaskStatus | msgspec.UnsetType = msgspec.UNSET
    due: AwareTime | msgspec.UnsetType | None = msgspec.UNSET


class RsvpChanges(_Changes):
    guest: MemberRef | msgspec.UnsetType = msgspec.UNSET  # on create only: whose RSVP (the sender's by default)
    status: RsvpStatus | msgspec.UnsetType = msgspec.UNSET
    meal: Annotated[str, msgspec.Meta(max_length=100)] | msgspec.UnsetType = msgspec.UNSET
    plus_ones: Annotated[int, msgspec.Meta(ge=0, le=20)] | msgspec.UnsetType = msgspec.UNSET
    dietary_notes: Annotated[str, msgspec.Meta(max_length=1000)] | msgspec.UnsetType = msgspec.UNSET


def _iso(value: datetime | None) -> str | None:
    # In UTC: a value just set from a client's change keeps the client's offset until read back.
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Reach:
    """Who a record's events go to: roles, and named members with their roles (hidden fields are
    decided per role, so a named member's role must be known)."""

    roles: frozenset[str]
    members: dict[int, str] = field(default_factory=dict)

    def __or__(self, other: Reach) -> Reach:
        return Reach(roles=self.roles | other.roles, members={**self.members, **other.members})


_COUPLE_AND_PLANNER = frozenset({Role.COUPLE.value, Role.PLANNER.value})


@dataclass(frozen=True)
class RecordKind:
    name: str
    model: type[models.Model]
    changes: type[_Changes]
    fields: tuple[str, ...]  # the values a client sees, in order
    default_strategy: Strategy
    hidden: dict[str, Permission]  # field -> the permission needed to see (and to write) it
    create_only: frozenset[str]
    wedding_path: str  # the lookup from the record to its wedding's id
    values_of: Callable[[Any], dict[str, Any]]
    reach_of: Callable[[Any], Reach]
    may_view: Callable[[Actor, Any], bool]
    # None when the actor may do it, else the reason: (actor, record or None on create, changes, deleting)
    edit_refusal: Callable[[Actor, Any | None, dict[str, Any], bool], str | None]
    apply: Callable[[Actor, Any, dict[str, Any]], list[str]]  # sets fields, returns the m2m fields to set after save
    new: Callable[[Actor, dict[str, Any]], Any]

    def wedding_id_of(self, record: Any) -> int:
        value: int = record.guest.wedding_id if isinstance(record, Rsvp) else record.wedding_id
        return value

    def queryset(self, *, wedding_id: int) -> models.QuerySet[Any]:
        return self.model._default_manager.filter(**{self.wedding_path: wedding_id})

    def visible_values(self, values: dict[str, Any], *, role: str) -> dict[str, Any]:
        return {
            name: value
            for name, value in values.items()
            if name not in self.hidden or role_has_permission(role=role, permission=self.hidden[name])
        }


# --- timeline items ------------------------------------------------------------------------------------


def _assigned_vendors(item: TimelineItem) -> list[int]:
    """The item's vendors, read once per instance: an op reads them for its values before and after
    the write, and Django drops the cache when the relation is set."""
    if not item.pk:
        return []
    prefetch_related_objects([item], Prefetch("assigned_vendors", queryset=Member.objects.only("pk")))
    return sorted(member.pk for member in item.assigned_vendors.all())


def _timeline_values(item: TimelineItem) -> dict[str, Any]:
    return {
        "title": item.title,
        "starts_at": _iso(item.starts_at),
        "ends_at": _iso(item.ends_at),
        "location": item.location or None,
        "notes": item.notes,
        "ceremony_notes": item.ceremony_notes,
        "assigned_vendors": _assigned_vendors(item),
    }


def _timeline_reach(item: TimelineItem) -> Reach:
    # Everyone who may read the timeline hears of its changes, so a view loaded from the state
    # endpoint never goes stale (docs/protocol.md widens PROTOCOL.md's row; decision 0027).
    return Reach(roles=roles_with_permission(permission=Permission.VIEW_TIMELINE))


def _timeline_refusal(actor: Actor, item: TimelineItem | None, changes: dict[str, Any], deleting: bool) -> str | None:
    if not actor.may(Permission.EDIT_TIMELINE):
        return f"a {actor.role} may not change the timeline"
    if "ceremony_notes" in changes and not actor.may(Permission.VIEW_CEREMONY_DETAILS):
        return f"a {actor.role} may not see or change ceremony details"
    return None


def _timeline_apply(actor: Actor, item: TimelineItem, changes: dict[str, Any]) -> list[str]:
    for name in ("title", "starts_at", "ends_at", "notes", "ceremony_notes"):
        if name in changes:
            setattr(item, name, changes[name])
    if "location" in changes:
        item.location = changes["location"] or ""
    _required(item, "title", "starts_at")
    if item.ends_at is not None and item.starts_at is not None and item.ends_at < item.starts_at:
        raise RecordInvalid("ends_at: the item cannot end before it starts")
    if "assigned_vendors" in changes:
        found = _wedding_members(actor.wedding_id, changes["assigned_vendors"])
        for pk in changes["assigned_vendors"]:
            if pk not in found or not Role(found[pk]).is_vendor:
                raise RecordInvalid(f"assigned_vendors: member {pk} is not a vendor of this wedding")
    return ["assigned_vendors"] if "assigned_vendors" in changes else []


def _timeline_new(actor: Actor, changes: dict[str, Any]) -> TimelineItem:
    if changes.get("starts_at") is None:  # the column is required: refused here, not by the database
        raise RecordInvalid("starts_at: a new timeline item needs its start")
    return TimelineItem(wedding_id=actor.wedding_id)


# --- tasks ---------------------------------------------------------------------------------------------


def _task_values(task: Task) -> dict[str, Any]:
    return {"title": task.title, "assignee": task.assignee_id, "status": task.status, "due": _iso(task.due)}


def _task_reach(task: Task) -> Reach:
    members = {}
    if task.assignee_id is not None:
        members[task.assignee_id] = Member.objects.filter(pk=task.assignee_id).values_list("role", flat=True).first()
    return Reach(roles=_COUPLE_AND_PLANNER, members={pk: role for pk, role in members.items() if role})


def _task_may_view(actor: Actor, task: Task) -> bool:
    return actor.role in _COUPLE_AND_PLANNER or (actor.member_id is not None and task.assignee_id == actor.member_id)


def _task_refusal(actor: Actor, task: Task | None, changes: dict[str, Any], deleting: bool) -> str | None:
    if actor.role in _COUPLE_AND_PLANNER:
        return None
    assignee = task is not None and actor.member_id is not None and task.assignee_id == actor.member_id
    if assignee and not deleting and set(changes) <= {"status"}:
        return None
    return "only the couple and the planner change tasks; an assignee changes its status"


def _task_apply(actor: Actor, task: Task, changes: dict[str, Any]) -> list[str]:
    for name in ("title", "status", "due"):
        if name in changes:
            setattr(task, name, changes[name])
    if "assignee" in changes:
        assignee = changes["assignee"]
        if assignee is not None and assignee not in _wedding_members(actor.wedding_id, [assignee]):
            raise RecordInvalid(f"assignee: member {assignee} is not a member of this wedding")
        task.assignee_id = assignee
    _required(task, "title")
    return []


def _task_new(actor: Actor, changes: dict[str, Any]) -> Task:
    return Task(wedding_id=actor.wedding_id)


# --- RSVPs ---------------------------------------------------------------------------------------------


def _rsvp_values(rsvp: Rsvp) -> dict[str, Any]:
    return {
        "guest": rsvp.guest_id,
        "status": rsvp.status,
        "meal": rsvp.meal,
        "plus_ones": rsvp.plus_ones,
        "dietary_notes": rsvp.dietary_notes,
    }


def _rsvp_reach(rsvp: Rsvp) -> Reach:
    return Reach(roles=_COUPLE_AND_PLANNER, members={rsvp.guest_id: Role.GUEST.value})


def _rsvp_may_view(actor: Actor, rsvp: Rsvp) -> bool:
    return actor.role in _COUPLE_AND_PLANNER or (actor.member_id is not None and rsvp.guest_id == actor.member_id)


def _rsvp_refusal(actor: Actor, rsvp: Rsvp | None, changes: dict[str, Any], deleting: bool) -> str | None:
    if actor.may(Permission.EDIT_RSVP):
        return None
    own = rsvp is not None and actor.member_id is not None and rsvp.guest_id == actor.member_id
    creating_own = (
        rsvp is None and actor.member_id is not None and changes.get("guest", actor.member_id) == actor.member_id
    )
    if (own or creating_own) and not deleting and actor.may(Permission.EDIT_RSVP, own=True):
        return None
    return (
        f"a {actor.role} may change only their own RSVP"
        if actor.may(Permission.EDIT_RSVP, own=True)
        else (f"a {actor.role} may not change RSVPs")
    )


def _rsvp_apply(actor: Actor, rsvp: Rsvp, changes: dict[str, Any]) -> list[str]:
    for name in ("status", "meal", "plus_ones", "dietary_notes"):
        if name in changes:
            setattr(rsvp, name, changes[name])
    return []


def _rsvp_new(actor: Actor, changes: dict[str, Any]) -> Rsvp:
    guest = changes.get("guest", actor.member_id)
    if guest is None:
        raise RecordInvalid("guest: name the guest whose RSVP this is")
    if _wedding_members(actor.wedding_id, [guest]).get(guest) != Role.GUEST.value:
        raise RecordInvalid(f"guest: member {guest} is not a guest of this wedding")
    existing = Rsvp.objects.filter(guest_id=guest).values_list("pk", flat=True).first()
    if existing is not None:
        raise RecordInvalid(f"guest: member {guest} already has an RSVP ({existing}); change that one")
    return Rsvp(guest_id=guest)


KINDS: dict[str, RecordKind] = {
    kind.name: kind
    for kind in (
        RecordKind(
            name=RecordKindName.TIMELINE_ITEM.value,
            model=TimelineItem,
            changes=TimelineChanges,
            fields=("title", "starts_at", "ends_at", "location", "notes", "ceremony_notes", "assigned_vendors"),
            default_strategy=Strategy.FIELD_MERGE,
            hidden={"ceremony_notes": Permission.VIEW_CEREMONY_DETAILS},
            create_only=frozenset(),
            wedding_path="wedding_id",
            values_of=_timeline_values,
            reach_of=_timeline_reach,
            may_view=lambda actor, item: actor.may(Permission.VIEW_TIMELINE),
            edit_refusal=_timeline_refusal,
            apply=_timeline_apply,
            new=_timeline_new,
        ),
        RecordKind(
            name=RecordKindName.TASK.value,
            model=Task,
            changes=TaskChanges,
            fields=("title", "assignee", "status", "due"),
            default_strategy=Strategy.ROLE_HIERARCHY,
            hidden={},
            create_only=frozenset(),
            wedding_path="wedding_id",
            values_of=_task_values,
            reach_of=_task_reach,
            may_view=_task_may_view,
            edit_refusal=_task_refusal,
            apply=_task_apply,
            new=_task_new,
        ),
        RecordKind(
            name=RecordKindName.RSVP.value,
            model=Rsvp,
            changes=RsvpChanges,
            fields=("guest", "status", "meal", "plus_ones", "dietary_notes"),
            default_strategy=Strategy.LAST_WRITE_WINS,
            hidden={},
            create_only=frozenset({"guest"}),
            wedding_path="guest__wedding_id",
            values_of=_rsvp_values,
            reach_of=_rsvp_reach,
            may_view=_rsvp_may_view,
            edit_refusal=_rsvp_refusal,
            apply=_rsvp_apply,
            new=_rsvp_new,
        ),
    )
}


def record_kind(name: str) -> RecordKind | None:
    return KINDS.get(name)


def kinds() -> Iterable[RecordKind]:
    return KINDS.values()
