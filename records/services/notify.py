"""The events of a change, each part of its reach seeing only the fields it may (decision 0027),
and the ``record.conflict`` notices that tell whoever was overwritten or overridden."""

from __future__ import annotations

from typing import Any

from realtime.audience import Audience
from realtime.names import EventType
from realtime.services.events import PublishedEvent, event_publish
from records.registry import Actor, Reach, RecordKind
from records.strategies import Resolution
from wedsync.models import Member
from wedsync.permissions import role_has_permission


def actor_view(actor: Actor) -> dict[str, Any]:
    return {"member": actor.member_id, "role": actor.role, "staff": actor.member is None}


def _withheld(kind: RecordKind, role: str) -> frozenset[str]:
    """The hidden fields of ``kind`` that ``role`` may not see."""
    return frozenset(name for name, perm in kind.hidden.items() if not role_has_permission(role=role, permission=perm))


def _split(kind: RecordKind, reach: Reach, *, author_role: str) -> list[tuple[frozenset[str] | None, Audience]]:
    """The reach split by which hidden fields each part may see: (the hidden fields withheld, or
    None for none, and the audience). A kind with no hidden fields is one part. The author's part
    comes last, so the highest seq of a change is the one the author's own devices receive."""
    if not kind.hidden:
        return [(None, Audience.of(roles=reach.roles, members=reach.members))]
    parts: dict[frozenset[str], tuple[set[str], set[int]]] = {}
    for role in reach.roles:
        parts.setdefault(_withheld(kind, role), (set(), set()))[0].add(role)
    for member_id, role in reach.members.items():
        if role not in reach.roles:
            parts.setdefault(_withheld(kind, role), (set(), set()))[1].add(member_id)
    authors = _withheld(kind, author_role)
    return [
        (hidden or None, Audience.of(roles=roles, members=members))
        for hidden, (roles, members) in sorted(parts.items(), key=lambda part: (part[0] == authors, sorted(part[0])))
    ]


def emit(
    *,
    kind: RecordKind,
    actor: Actor,
    event_type: EventType,
    reach: Reach,
    data: dict[str, Any],
) -> list[PublishedEvent]:
    """Store the event once per part of the reach that sees different fields (decision 0027), each
    part's data without the fields it may not see; fanned out after commit by the event log."""
    published = []
    for hidden, audience in _split(kind, reach, author_role=actor.role):
        shown = data if hidden is None else _withhold(data, hidden)
        published.append(
            event_publish(
                wedding_id=actor.wedding_id,
                event_type=event_type,
                data=shown,
                sender=actor.member,
                audience=audience,
            )
        )
    return published


def _withhold(data: dict[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    shown = dict(data)
    for key in ("values", "yours", "current"):
        if isinstance(shown.get(key), dict):
            shown[key] = {name: value for name, value in shown[key].items() if name not in hidden}
    for key in ("changed", "fields", "lost"):
        if isinstance(shown.get(key), list):
            shown[key] = [name for name in shown[key] if name not in hidden]
    return shown


def actor_reach(actor: Actor) -> Reach:
    """The author's other devices see what they did."""
    return Reach(roles=frozenset(), members={} if actor.member is None else {actor.member.pk: actor.role})


def members_reach(member_ids: set[int], *, wedding_id: int) -> Reach:
    return Reach(
        roles=frozenset(),
        members=dict(Member.objects.filter(wedding_id=wedding_id, pk__in=member_ids).values_list("pk", "role")),
    )


def notices(
    *,
    kind: RecordKind,
    actor: Actor,
    record_id: int,
    version: int,
    values: dict[str, Any] | None,
    wire: dict[str, Any],
    resolution: Resolution,
) -> None:
    """Nobody is overwritten silently: the members whose values this edit replaced, and the author
    when part of their edit lost, each get a ``record.conflict`` notice. ``values`` None: the edit
    deleted the record."""
    for member_id, fields in sorted(resolution.overwritten.items()):
        if member_id == actor.member_id:
            continue
        data = {
            "record": kind.name,
            "id": record_id,
            "version": version,
            "reason": "overwritten",
            "conflict": None,
            "fields": sorted(fields),
            "current": {} if values is None else {name: values[name] for name in sorted(fields)},
            "by": actor_view(actor),
        }
        if values is None:
            data["deleted"] = True
        emit(
            kind=kind,
            actor=actor,
            event_type=EventType.RECORD_CONFLICT,
            reach=members_reach({member_id}, wedding_id=actor.wedding_id),
            data=data,
        )
    if resolution.lost and actor.member is not None and values is not None:
        lost_notice(
            kind=kind, actor=actor, record_id=record_id, version=version, values=values, wire=wire, lost=resolution.lost
        )


def lost_notice(
    *,
    kind: RecordKind,
    actor: Actor,
    record_id: int,
    version: int,
    values: dict[str, Any],
    wire: dict[str, Any],
    lost: frozenset[str],
) -> None:
    emit(
        kind=kind,
        actor=actor,
        event_type=EventType.RECORD_CONFLICT,
        reach=actor_reach(actor),
        data={
            "record": kind.name,
            "id": record_id,
            "version": version,
            "reason": "overridden",
            "conflict": None,
            "fields": sorted(lost),
            "yours": {name: wire[name] for name in sorted(lost) if name in wire},
            "current": {name: values[name] for name in sorted(lost) if name in values},
            "by": None,
        },
    )
