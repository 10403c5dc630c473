"""How a stale edit is resolved: pure functions over what changed since the edit's base
(PROTOCOL.md section 7, docs/decisions/0027).

An edit is *stale* when someone changed the record after the version the client based it on. Only
the fields both sides changed to different values are *contested*; changes to other fields always
combine. A strategy decides the contested fields:

- ``last_write_wins``: the edit arriving last wins every contested field;
- ``role_hierarchy``: the edit wins all of them if its author ranks at least as high as every
  contested field's writer since the base, else it loses as a whole (none of its fields apply);
- ``field_merge``: each contested field goes to the higher rank (equal rank: the later edit);
- ``manual``: nothing applies and both sides are kept as a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from records.models import Strategy


@dataclass(frozen=True, slots=True)
class Revision:
    """One change since the edit's base: the fields it changed and its author."""

    version: int
    fields: frozenset[str]
    rank: int
    member_id: int | None


class Outcome:
    APPLIED = "applied"
    MERGED = "merged"
    OVERRIDDEN = "overridden"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: str
    apply: dict[str, Any]  # the edit's fields that are written
    lost: frozenset[str] = frozenset()  # the edit's fields that lost to the record's values
    # members whose earlier values of these fields the edit replaced: each gets a notice
    overwritten: dict[int, frozenset[str]] = field(default_factory=dict)
    contested: frozenset[str] = frozenset()


def _contested(
    *, changes: dict[str, Any], current: dict[str, Any], since_base: list[Revision], history_complete: bool
) -> dict[str, list[Revision]]:
    """Each field of the edit that someone else changed since the base to a value other than the
    edit's, with the revisions that changed it (oldest first). Without the full history since the
    base (pruned), every such field counts as changed by the record's last writer."""
    contested: dict[str, list[Revision]] = {}
    for name, value in changes.items():
        if current.get(name) == value:
            continue
        writers = [revision for revision in since_base if name in revision.fields]
        if not writers and not history_complete and since_base:
            writers = [since_base[-1]]
        if writers:
            contested[name] = writers
    return contested


def resolve(
    *,
    strategy: str,
    changes: dict[str, Any],
    current: dict[str, Any],
    since_base: list[Revision],
    rank: int,
    author: int | None = None,
    history_complete: bool = True,
) -> Resolution:
    """What happens to an edit of ``changes`` by ``author`` (a member id) of ``rank``, given the
    record's ``current`` values and the revisions made after the edit's base (empty: the edit is
    fresh). The author's own revisions since the base never contest their edit."""
    if author is not None:
        since_base = [revision for revision in since_base if revision.member_id != author]
    if not since_base:
        return Resolution(outcome=Outcome.APPLIED, apply=dict(changes))
    contested = _contested(changes=changes, current=current, since_base=since_base, history_complete=history_complete)
    if not contested:
        return Resolution(outcome=Outcome.MERGED, apply=dict(changes))
    if strategy == Strategy.MANUAL:
        return Resolution(outcome=Outcome.CONFLICT, apply={}, lost=frozenset(changes), contested=frozenset(contested))
    if strategy == Strategy.LAST_WRITE_WINS:
        wins = set(contested)
    elif strategy == Strategy.ROLE_HIERARCHY:
        strongest = max(writer.rank for writers in contested.values() for writer in writers)
        if rank < strongest:
            return Resolution(
                outcome=Outcome.OVERRIDDEN, apply={}, lost=frozenset(changes), contested=frozenset(contested)
            )
        wins = set(contested)
    else:  # field_merge: each contested field to the higher rank of its last writer and the edit
        wins = {name for name, writers in contested.items() if rank >= writers[-1].rank}
    lost = frozenset(contested) - wins
    apply = {name: value for name, value in changes.items() if name not in lost}
    overwritten: dict[int, set[str]] = {}
    for name in wins:
        for writer in contested[name]:
            if writer.member_id is not None:
                overwritten.setdefault(writer.member_id, set()).add(name)
    return Resolution(
        outcome=Outcome.OVERRIDDEN if lost else Outcome.MERGED,
        apply=apply,
        lost=lost,
        overwritten={member: frozenset(names) for member, names in overwritten.items()},
        contested=frozenset(contested),
    )
