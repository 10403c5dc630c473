"""What PROTOCOL.md says members may see and do with shared records, written out for the tests
rather than read from the engine (records/registry.py), so that the two can disagree."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from wedsync.models import Member, Rsvp, Task, TimelineItem

CEREMONY_VIEWERS = frozenset({"couple", "planner", "venue", "photographer", "videographer", "musician", "officiant"})
TIMELINE_EDITORS = frozenset(
    {"couple", "planner", "venue", "photographer", "videographer", "musician", "caterer", "florist"}
)
TIMELINE_VIEWERS = TIMELINE_EDITORS | {"officiant", "guest"}
COUPLE_AND_PLANNER = frozenset({"couple", "planner"})
MODELS = {"timeline_item": TimelineItem, "task": Task, "rsvp": Rsvp}


def withheld_from(role: str) -> frozenset[str]:
    return frozenset() if role in CEREMONY_VIEWERS else frozenset({"ceremony_notes"})


def hidden_leaks(data: dict[str, Any], *, role: str) -> list[str]:
    """The fields a ``role`` may not see that ``data`` (an event's or a reply's) names anyway."""
    hidden = withheld_from(role)
    leaked = []
    for key in ("values", "yours", "current", "changed", "fields", "lost"):
        leaked += [f"{key}.{name}" for name in data.get(key) or () if name in hidden]
    return leaked


def in_audience(kind: str, values: dict[str, Any] | None, *, member_id: int, role: str) -> bool:
    """Who hears of a change: the timeline every role that may view it (docs/protocol.md widens
    PROTOCOL.md's row, so that a view reloaded from the state endpoint never goes stale); tasks the
    couple, the planner and the assignee; RSVPs the couple, the planner and that guest."""
    if kind == "timeline_item":
        return role in TIMELINE_VIEWERS
    if role in COUPLE_AND_PLANNER:
        return True
    if values is None:
        return False
    return values.get("assignee" if kind == "task" else "guest") == member_id


def refusal_predicted(op: dict[str, Any], *, role: str, member_id: int) -> str | None:
    """The error code the permission matrix and the record's state (read now) call for, or None."""
    kind, changes, deleting = op["record"], op.get("changes") or {}, op.get("delete", False)
    record: Any = None
    if op["id"] is not None:
        record = MODELS[kind]._default_manager.filter(pk=op["id"]).first()
        if record is None:
            return "not_found"
    if kind == "timeline_item":
        if role not in TIMELINE_EDITORS or ("ceremony_notes" in changes and role not in CEREMONY_VIEWERS):
            return "forbidden"
        return "invalid" if record is None and "starts_at" not in changes else None
    if role in COUPLE_AND_PLANNER:
        allowed = True
    elif kind == "task":  # an assignee changes the status of their own task, nothing else
        allowed = record is not None and record.assignee_id == member_id and not deleting and set(changes) <= {"status"}
    else:  # a guest changes their own RSVP, never deletes it
        owner = record.guest_id if record is not None else changes.get("guest", member_id)
        allowed = role == "guest" and owner == member_id and not deleting
    if not allowed:
        return "forbidden"
    if kind == "rsvp" and record is None:
        guest = changes.get("guest", member_id)  # the sender's own RSVP unless a guest is named
        if not Member.objects.filter(pk=guest, role="guest").exists() or Rsvp.objects.filter(guest_id=guest).exists():
            return "invalid"  # only a guest has an RSVP, and only one
    return None


# --- changes a member may send: small domains, so that edits often touch the same fields ---------------

TITLES = st.sampled_from(["Vows", "First dance", "Cake"])
TIMES = st.sampled_from(["2027-06-12T15:00:00+02:00", "2027-06-12T19:30:00+02:00", "2027-06-12T18:00:00Z"])


def timeline_changes(vendors: list[int], *, creating: bool) -> st.SearchStrategy[dict[str, Any]]:
    optional = {
        "title": TITLES,
        "starts_at": TIMES,
        "location": st.sampled_from([None, "ceremony_area", "reception_hall"]),
        "notes": st.sampled_from(["", "ladder", "candles"]),
        "ceremony_notes": st.sampled_from(["rings", "readings"]),
        "assigned_vendors": st.lists(st.sampled_from(vendors), unique=True, max_size=2).map(sorted),
    }
    return _changes(optional, required=("title",) if creating else ())


def task_changes(members: list[int], *, creating: bool) -> st.SearchStrategy[dict[str, Any]]:
    status = st.sampled_from(["todo", "in_progress", "done", "blocked"])
    optional = {"title": TITLES, "status": status, "assignee": st.sampled_from([None, *members])}
    whole = _changes(optional, required=("title",) if creating else ())
    return whole if creating else st.one_of(st.fixed_dictionaries({"status": status}), whole)


def rsvp_changes(guest: int, *, creating: bool) -> st.SearchStrategy[dict[str, Any]]:
    optional = {
        "status": st.sampled_from(["pending", "attending", "declined", "maybe"]),
        "meal": st.sampled_from(["fish", "veg"]),
        "plus_ones": st.integers(0, 2),
        "dietary_notes": st.sampled_from(["", "nuts"]),
    }
    if creating:
        optional["guest"] = st.just(guest)
    return _changes(optional, required=())


def _changes(
    fields: dict[str, st.SearchStrategy[Any]], *, required: tuple[str, ...]
) -> st.SearchStrategy[dict[str, Any]]:
    """Some of ``fields`` (at least one), always the ``required`` ones."""
    mapping = {name: fields[name] for name in required}
    optional = {name: strategy for name, strategy in fields.items() if name not in required}
    return st.fixed_dictionaries(mapping, optional=optional).filter(bool)


# --- judging what members received -----------------------------------------------------------------------

RECORD_EVENTS = ("record.created", "record.updated", "record.deleted")
History = dict[tuple[str, int], list[dict[str, Any]]]


def record_history(events: list[dict[str, Any]]) -> History:
    """Each record's create, changes and deletion in version order, from a member who sees them all."""
    history: History = {}
    for event in sorted(events, key=lambda e: e["seq"]):
        if event["type"] in RECORD_EVENTS:
            history.setdefault((event["data"]["record"], event["data"]["id"]), []).append(event)
    return history


def audience_breaches(received: list[dict[str, Any]], history: History, *, member_id: int, role: str) -> list[Any]:
    """Record events a member got outside the record's audience before and after the change (their
    own changes aside: the author's other devices see what they did)."""
    breaches = []
    for event in received:
        data = event["data"]
        if event["type"] not in RECORD_EVENTS or data["actor"]["member"] == member_id:
            continue
        versions = history[(data["record"], data["id"])]
        at = next(i for i, e in enumerate(versions) if e["data"]["version"] == data["version"])
        around = [versions[i]["data"].get("values") for i in (at - 1, at) if i >= 0]
        if not any(in_audience(data["record"], values, member_id=member_id, role=role) for values in around):
            breaches.append(event)
    return breaches


def silent_overwrites(
    history: History,
    *,
    bases: dict[tuple[int, str], int | None],
    notices: dict[int, list[dict[str, Any]]],
    roles: dict[int, str],
) -> list[str]:
    """Values replaced (or deleted) by a change based on a version before them, whose writer got no
    ``record.conflict`` about that change. ``bases``: the base version of each (member, op id)."""
    silent = []
    for (kind, record_id), versions in history.items():
        for at, event in enumerate(versions):
            data, author = event["data"], event["data"]["actor"]["member"]
            base = bases.get((author, data["op_id"]))
            if event["type"] == "record.created" or base is None:
                continue
            names = data["changed"] if event["type"] == "record.updated" else list(versions[at - 1]["data"]["values"])
            for name in names:
                before = next((e for e in reversed(versions[:at]) if name in e["data"].get("changed", [])), None)
                writer = None if before is None else before["data"]["actor"]["member"]
                if before is None or writer is None or before["data"]["version"] <= base or writer == author:
                    continue
                if name in withheld_from(roles[writer]):
                    continue
                told = [
                    n
                    for n in notices.get(writer, [])
                    if (n["record"], n["id"], n["version"]) == (kind, record_id, data["version"])
                    and name in n["fields"]
                ]
                if not told:
                    silent.append(f"member {writer}'s {name} of {kind} {record_id} vanished at v{data['version']}")
    return silent
