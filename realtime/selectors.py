"""Reads for the socket side: memberships, subscriptions, and the event log for replay and repair.

Every function returns evaluated plain data, so async callers can run it in a thread
(``database_sync_to_async``) and use the result without touching the ORM again.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from realtime.messages import EventMessage
from realtime.models import Event, EventAck, WeddingStream
from realtime.names import EMERGENCY_REPEAT_FIELD, EventType, Priority
from realtime.protocol import encode
from realtime.services.events import event_frame, layer_message
from wedsync.models import Member, UserTokenGeneration, Wedding
from wedsync.permissions import Role
from wedsync.refusals import Refused
from wedsync.selectors import weddings_overseen

WEDDING_DAY_HEARTBEAT = 10
DEFAULT_HEARTBEAT = 30
_REPLAY_CHUNK = 500
# An observer's subscription (decision 0029) stands on no member row: it sees what a planner sees,
# minus what is addressed to members by id, and is checked against staff scope instead.
OBSERVER_MEMBER_ID = 0
OBSERVER_ROLE = Role.PLANNER.value


@dataclass(frozen=True, slots=True)
class MembershipView:
    wedding_id: int
    member_id: int
    role: str
    key_person: bool = False  # flagged as one of the day's key people (load shedding never refuses them)


# The hot reads of a connect and a subscribe are hand-written statements: the ORM spent several
# times the database's own time compiling these queries and building model objects for them, on
# the server CPU that a reconnect storm is short of. Names come from the models, never from input.
_MEMBER, _WEDDING, _STREAM = Member._meta.db_table, Wedding._meta.db_table, WeddingStream._meta.db_table
_MEMBERSHIPS_SQL = (
    f"SELECT m.wedding_id, m.id, m.role, m.is_key_person, w.date, w.time_zone FROM {_MEMBER} m "  # noqa: S608
    f"JOIN {_WEDDING} w ON w.id = m.wedding_id WHERE m.user_id = %s AND m.is_active "
    "ORDER BY m.wedding_id, m.role, m.id"  # Member's default ordering, which the welcome frame shows
)
_USER = User._meta.db_table
_MEMBERSHIP_SQL = (  # one row if the wedding exists, NULLs in it if the user is not an active member
    f"SELECT m.id, m.role FROM {_WEDDING} w LEFT JOIN {_MEMBER} m "  # noqa: S608
    "ON m.wedding_id = w.id AND m.user_id = %s AND m.is_active "
    f"AND EXISTS (SELECT 1 FROM {_USER} u WHERE u.id = m.user_id AND u.is_active) WHERE w.id = %s"
)
_STREAM_HEAD_SQL = f"SELECT last_seq, epoch FROM {_STREAM} WHERE wedding_id = %s"  # noqa: S608
_EVENT_COLUMNS = ", ".join(f'"{field.column}"' for field in Event._meta.concrete_fields)
_REPLAY_CHUNK_SQL = (  # for Event.objects.raw(), which still applies the model's converters (JSON, time)
    f"SELECT {_EVENT_COLUMNS} FROM {Event._meta.db_table} "  # noqa: S608
    "WHERE wedding_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
)


def memberships_for_user(*, user_id: int) -> tuple[list[MembershipView], int]:
    """The user's active memberships and the heartbeat interval (10 s if a wedding is today)."""
    with connection.cursor() as cursor:
        cursor.execute(_MEMBERSHIPS_SQL, [user_id])
        rows = cursor.fetchall()
    now = timezone.now()
    wedding_day = any(day == now.astimezone(zoneinfo.ZoneInfo(zone)).date() for *_, day, zone in rows)
    views = [
        MembershipView(wedding_id=wedding_id, member_id=pk, role=role, key_person=bool(key_person))
        for wedding_id, pk, role, key_person, *_ in rows
    ]
    return views, WEDDING_DAY_HEARTBEAT if wedding_day else DEFAULT_HEARTBEAT


# A publish reads the sender's membership fresh every time (a role may have changed), with the user
# its name comes from, in one hand-written statement: the ORM's filter/select_related/first was a
# large share of a busy node's GIL, most of it compiling the query (decision 0013).
# What Member.name reads, in the model's field order (User.from_db takes values in that order).
_PUBLISHER_USER_FIELDS = tuple(
    field.attname for field in User._meta.concrete_fields if field.attname in ("username", "first_name", "last_name")
)
_MEMBER_FIELD_NAMES = [field.attname for field in Member._meta.concrete_fields]
_MEMBER_ID_INDEX = _MEMBER_FIELD_NAMES.index("id")
_MEMBER_ROLE_INDEX = _MEMBER_FIELD_NAMES.index("role")


@functools.cache
def _member_for_publish_sql() -> str:
    quote_name = connection.ops.quote_name
    user_columns = {field.name: field.column for field in User._meta.concrete_fields}
    columns = ", ".join(f"m.{quote_name(field.column)}" for field in Member._meta.concrete_fields)
    picked = ", ".join(f"u.{quote_name(user_columns[name])}" for name in _PUBLISHER_USER_FIELDS)
    return (  # table and column names come from the models, never from input
        f"SELECT {columns}, {picked} FROM {quote_name(_MEMBER)} m "  # noqa: S608
        f"JOIN {quote_name(User._meta.db_table)} u ON u.{quote_name(user_columns['id'])} = m.user_id "
        f"WHERE m.user_id = %s AND m.wedding_id = %s AND m.is_active AND u.{quote_name('is_active')}"
    )


class MemberLookup(Protocol):
    """How a publish finds its sender's membership: :func:`member_for_publish`, or a node's cache."""

    def __call__(self, *, user_id: int, wedding_id: int) -> Member | None: ...


# The row :func:`member_row_for_publish` reads: the member's columns, then the user's that its name needs.
MemberRow = tuple[Any, ...]


def member_for_publish(*, user_id: int, wedding_id: int) -> Member | None:
    """The user's active member of the wedding, with the user fields its ``name`` needs, or None."""
    row = member_row_for_publish(user_id=user_id, wedding_id=wedding_id)
    return None if row is None else member_from_row(row)


def member_row_for_publish(*, user_id: int, wedding_id: int) -> MemberRow | None:
    """The row of :func:`member_for_publish`: one hand-written statement read with a plain cursor
    (``raw()`` resolved its columns to fields on every call, decision 0034). A node's cache keeps
    rows, not instances, so that no two threads share a model instance (realtime.member_cache)."""
    with connection.cursor() as cursor:
        cursor.execute(_member_for_publish_sql(), [user_id, wedding_id])
        row: MemberRow | None = cursor.fetchone()
    return row


def member_row_access(row: MemberRow) -> tuple[int, str]:
    """(member id, role) of a row of :func:`member_row_for_publish`, without building the member."""
    return row[_MEMBER_ID_INDEX], row[_MEMBER_ROLE_INDEX]


def member_from_row(row: MemberRow) -> Member:
    """A fresh instance of the row's member, its user attached, as the ORM would build both
    (``from_db``). The user's other fields are deferred: reading one is a query, so from async
    code only in a thread, like any ORM access."""
    member_values, user_values = row[: len(_MEMBER_FIELD_NAMES)], row[len(_MEMBER_FIELD_NAMES) :]
    member = Member.from_db(connection.alias, _MEMBER_FIELD_NAMES, member_values)
    member.user = User.from_db(connection.alias, ["id", *_PUBLISHER_USER_FIELDS], [member.user_id, *user_values])
    return member


class SubscriptionDenied(Refused):
    """A refused ``subscribe`` (the socket services audit it)."""


def membership_for_topic(*, user_id: int, wedding_id: int) -> MembershipView:
    """The user's active membership of the wedding, or :class:`SubscriptionDenied`: ``forbidden``
    alike for a wedding that does not exist and one the user is not in, so that nobody can probe
    which wedding ids exist."""
    with connection.cursor() as cursor:
        cursor.execute(_MEMBERSHIP_SQL, [user_id, wedding_id])
        row = cursor.fetchone()
    if row is None or row[0] is None:
        raise SubscriptionDenied(code="forbidden", message=f"You are not a member of wedding {wedding_id}.")
    member_id, role = row
    return MembershipView(wedding_id=wedding_id, member_id=member_id, role=role)


def observer_membership(*, user_id: int, wedding_id: int) -> MembershipView:
    """An observer's view of a wedding the user oversees as staff (wedsync.selectors), or
    :class:`SubscriptionDenied`, ``forbidden`` alike for a wedding that does not exist."""
    user = User.objects.filter(pk=user_id).first()
    if user is None or not weddings_overseen(user=user).filter(pk=wedding_id).exists():
        raise SubscriptionDenied(code="forbidden", message=f"You do not oversee wedding {wedding_id}.")
    return MembershipView(wedding_id=wedding_id, member_id=OBSERVER_MEMBER_ID, role=OBSERVER_ROLE)


def oversight_still_held(*, observed: list[tuple[int, int]]) -> frozenset[tuple[int, int]]:
    """Of the (user, wedding) pairs a node's observers hold, those the user still oversees: one
    query for the users and one per observing user (a handful of coordinators per node)."""
    weddings_by_user: dict[int, set[int]] = {}
    for user_id, wedding_id in observed:
        weddings_by_user.setdefault(user_id, set()).add(wedding_id)
    held: set[tuple[int, int]] = set()
    for user in User.objects.filter(pk__in=list(weddings_by_user)):
        overseen = weddings_overseen(user=user).filter(pk__in=list(weddings_by_user[user.pk]))
        held.update((user.pk, wedding_id) for wedding_id in overseen.values_list("pk", flat=True))
    return frozenset(held)


_GENERATIONS, _USERS = UserTokenGeneration._meta.db_table, _USER
_SESSIONS = Session._meta.db_table
# Every 5 s with every socket of the node: 10,000 ids as one array parameter, not 10,000
# placeholders for the ORM to compile, which held the GIL long enough to delay every socket's
# deliveries each time (decision 0013).
_ACCESS_MEMBERS_SQL = f"SELECT id, role, wedding_id, user_id, is_active FROM {_MEMBER} WHERE id = ANY(%s)"  # noqa: S608
_ACCESS_USERS_SQL = (
    f"SELECT u.id, u.is_active, g.generation FROM {_USERS} u "  # noqa: S608
    f"LEFT JOIN {_GENERATIONS} g ON g.user_id = u.id WHERE u.id = ANY(%s)"
)
_ACCESS_SESSIONS_SQL = f"SELECT session_key FROM {_SESSIONS} WHERE session_key = ANY(%s) AND expire_date > %s"  # noqa: S608


@dataclass(frozen=True, slots=True)
class AccessSnapshot:
    """What each node's access check compares its sockets with, read in one go."""

    members: dict[int, tuple[str, int, int, bool]]  # member -> (role, wedding, user, active), if it exists
    generations: dict[int, int]  # user -> token generation (0 when never revoked)
    inactive_users: frozenset[int]  # of the users asked about: deactivated or deleted
    live_sessions: frozenset[str]  # of the sessions asked about: those that exist and have not expired
    overseen: frozenset[tuple[int, int]] = frozenset()  # of the observed (user, wedding) pairs: still overseen


def access_snapshot(
    *, member_ids: list[int], user_ids: list[int], session_keys: list[str], observed: Sequence[tuple[int, int]] = ()
) -> AccessSnapshot:
    """The memberships, users, browser sessions and oversight the node's sockets stand on, as
    they are now."""
    now = timezone.now()
    if connection.vendor != "postgresql":  # the embedded SQLite profile: small, and no arrays
        members = {
            pk: (role, wedding_id, user_id, active)
            for pk, role, wedding_id, user_id, active in Member.objects.filter(pk__in=member_ids).values_list(
                "pk", "role", "wedding_id", "user_id", "is_active"
            )
        }
        users = {
            pk: (active, generation or 0)
            for pk, active, generation in User.objects.filter(pk__in=user_ids).values_list(
                "pk", "is_active", "token_generation__generation"
            )
        }
        sessions = Session.objects.filter(session_key__in=session_keys, expire_date__gt=now)
        live = frozenset(sessions.values_list("session_key", flat=True))
    else:
        with connection.cursor() as cursor:
            cursor.execute(_ACCESS_MEMBERS_SQL, [member_ids])
            members = {pk: (role, wedding_id, user_id, active) for pk, role, wedding_id, user_id, active in cursor}
            cursor.execute(_ACCESS_USERS_SQL, [user_ids])
            users = {pk: (active, generation or 0) for pk, active, generation in cursor}
            live = frozenset()
            if session_keys:
                cursor.execute(_ACCESS_SESSIONS_SQL, [session_keys, now])
                live = frozenset(key for (key,) in cursor)
    return AccessSnapshot(
        members=members,
        generations={pk: generation for pk, (_active, generation) in users.items()},
        inactive_users=frozenset(pk for pk in user_ids if not users.get(pk, (False, 0))[0]),
        live_sessions=live,
        overseen=oversight_still_held(observed=list(observed)) if observed else frozenset(),
    )


def stream_head(*, wedding_id: int) -> tuple[int, str]:
    """(last seq, epoch) of the wedding's event stream; a wedding with no events has seq 0."""
    with connection.cursor() as cursor:
        cursor.execute(_STREAM_HEAD_SQL, [wedding_id])
        head = cursor.fetchone()
    if head is None:  # a wedding's first subscriber: create its stream (a write only this once)
        WeddingStream.objects.bulk_create([WeddingStream(wedding_id=wedding_id)], ignore_conflicts=True)
        head = WeddingStream.objects.filter(wedding_id=wedding_id).values_list("last_seq", "epoch").get()
    return head[0], head[1]


def stream_heads(*, wedding_ids: list[int]) -> dict[int, int]:
    return dict(WeddingStream.objects.filter(wedding_id__in=wedding_ids).values_list("wedding_id", "last_seq"))


@dataclass(frozen=True, slots=True)
class ReplayPage:
    frames: list[dict[str, Any]]  # the events the member may see in this page, oldest first
    seqs: list[int]
    next_after: int | None  # read the next page after this seq; None when the replay is complete


@dataclass(frozen=True, slots=True)
class Replay:
    upto: int  # the stream's seq when the replay was read: live delivery continues after it
    epoch: str
    recovered: bool
    first: ReplayPage  # the replay is read a page at a time (events_replay_page), never all at once


NO_PAGE = ReplayPage(frames=[], seqs=[], next_after=None)  # an empty replay


def events_replay(
    *, wedding_id: int, member_id: int, role: str, since: int | None, epoch: str | None, min_priority: int
) -> Replay:
    """What a (re)subscribing member missed, and its first page. ``recovered`` is False when the
    client must reload over REST instead: another epoch, a ``since`` beyond the stream, events
    older than retention, or more than ``REALTIME_REPLAY_MAX`` events to go through."""
    upto, current_epoch = stream_head(wedding_id=wedding_id)
    if since is None:
        return Replay(upto=upto, epoch=current_epoch, recovered=True, first=NO_PAGE)
    gone = Replay(upto=upto, epoch=current_epoch, recovered=False, first=NO_PAGE)
    if (epoch is not None and epoch != current_epoch) or since > upto or upto - since > settings.REALTIME_REPLAY_MAX:
        return gone  # seq is gap-free: upto - since is how many events there are to go through
    if since == upto:
        return Replay(upto=upto, epoch=current_epoch, recovered=True, first=NO_PAGE)
    retention_start: datetime = timezone.now() - timedelta(days=settings.REALTIME_RETENTION_DAYS)
    chunk = _replay_chunk(wedding_id=wedding_id, after=since, upto=upto)
    if not (chunk and chunk[0].seq == since + 1 and chunk[0].created_at >= retention_start):
        return gone  # the first missed event was purged, or is older than retention
    first = _replay_page_of(chunk, member_id=member_id, role=role, upto=upto, min_priority=min_priority)
    return Replay(upto=upto, epoch=current_epoch, recovered=True, first=first)


def events_replay_page(
    *, wedding_id: int, member_id: int, role: str, after: int, upto: int, min_priority: int
) -> ReplayPage:
    """The replay's page after ``after`` (up to ``upto``): at most ``_REPLAY_CHUNK`` events read."""
    chunk = _replay_chunk(wedding_id=wedding_id, after=after, upto=upto) if after < upto else []
    return _replay_page_of(chunk, member_id=member_id, role=role, upto=upto, min_priority=min_priority)


def _replay_page_of(chunk: list[Event], *, member_id: int, role: str, upto: int, min_priority: int) -> ReplayPage:
    frames: list[dict[str, Any]] = []
    seqs: list[int] = []
    for event in chunk:
        if event.priority >= min_priority and (role in event.audience_roles or member_id in event.audience_members):
            frames.append(event_frame(event, replay=True))
            seqs.append(event.seq)
    last = chunk[-1].seq if chunk else upto
    return ReplayPage(frames=frames, seqs=seqs, next_after=last if last < upto else None)


def _replay_chunk(*, wedding_id: int, after: int, upto: int) -> list[Event]:
    return list(Event.objects.raw(_REPLAY_CHUNK_SQL, [wedding_id, after, upto, _REPLAY_CHUNK]))


def events_after(*, wedding_id: int, after: int, upto: int | None = None) -> list[EventMessage]:
    """Channel-layer messages for the events after ``after``: what a node re-reads to fill a gap."""
    events = Event.objects.filter(wedding_id=wedding_id, seq__gt=after).order_by("seq")
    if upto is not None:
        events = events.filter(seq__lte=upto)
    return [layer_message(event) for event in events[:_REPLAY_CHUNK]]


@dataclass(frozen=True, slots=True)
class Unacknowledged:
    wedding_id: int
    seq: int
    priority: int
    roles: frozenset[str]
    members: frozenset[int]
    acknowledged_by: frozenset[int]
    text: str  # the event frame, marked ``"resent": true``


def unacknowledged_events(
    *, wedding_ids: list[int], newer_than: datetime, older_than: datetime
) -> list[Unacknowledged]:
    """Emergency and critical events of these weddings sent in the window, with who acknowledged them.
    Repeats of an open emergency are left out: the alarm they update is re-sent, and re-sending each
    of a flood of repeats would multiply the re-sends (decision 0011)."""
    events = list(
        Event.objects.filter(
            wedding_id__in=wedding_ids,
            priority__gte=Priority.CRITICAL,
            created_at__gte=newer_than,
            created_at__lte=older_than,
        )
        .exclude(type=EventType.EMERGENCY_ALERT.value, data__has_key=EMERGENCY_REPEAT_FIELD)
        .order_by("-created_at")[:_REPLAY_CHUNK]  # the newest first: they matter most
    )
    acks: dict[Any, set[int]] = {}
    for event_id, member_id in EventAck.objects.filter(event__in=events).values_list("event_id", "member_id"):
        acks.setdefault(event_id, set()).add(member_id)
    return [
        Unacknowledged(
            wedding_id=event.wedding_id,
            seq=event.seq,
            priority=event.priority,
            roles=frozenset(event.audience_roles),
            members=frozenset(event.audience_members),
            acknowledged_by=frozenset(acks.get(event.id, ())),
            text=encode({**event_frame(event, replay=False), "resent": True}),
        )
        for event in events
    ]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    events: list[dict[str, Any]]  # event frames (``replay: true``), oldest first
    next_after: int | None  # the seq to ask ``after`` for the next page; None at the stream's head


# Chunks of the log one history page reads at most (a page may then hold fewer than asked), and
# the seqs one chunk spans at most.
_HISTORY_CHUNKS_MAX = 20
_HISTORY_WINDOW = 5_000


def events_history(
    *,
    wedding_id: int,
    member_id: int,
    role: str,
    after: int,
    before: int | None,
    since: datetime | None,
    until: datetime | None,
    types: frozenset[str],
    limit: int,
) -> HistoryPage:
    """A page of the wedding's log as ``member_id``/``role`` may see it (the replay's audience
    rule), by seq after ``after``, up to ``before`` (exclusive), within [``since``, ``until``),
    of ``types`` (all when empty). Reads the log a chunk at a time until ``limit`` events are found:
    the audience is decided per event in Python, as for the replay (JSON lookups differ by database).
    A page reads at most ``_HISTORY_CHUNKS_MAX`` chunks, so a log the caller sees little of ends a
    page early, with ``next_after`` where the reading stopped, rather than being read whole."""
    head, _epoch = stream_head(wedding_id=wedding_id)
    upto = head if before is None else min(head, before - 1)
    events: list[dict[str, Any]] = []
    cursor = after
    chunks = 0
    while cursor < upto and len(events) < limit and chunks < _HISTORY_CHUNKS_MAX:
        chunks += 1
        # A window of seqs as well as a number of rows: a filter matching little (a rare type, a
        # time range) must not make one chunk's query walk the whole log to fill itself.
        window_end = min(upto, cursor + _HISTORY_WINDOW)
        rows = Event.objects.filter(wedding_id=wedding_id, seq__gt=cursor, seq__lte=window_end)
        if types:
            rows = rows.filter(type__in=sorted(types))
        if since is not None:
            rows = rows.filter(created_at__gte=since)
        if until is not None:
            rows = rows.filter(created_at__lt=until)
        chunk = list(rows.order_by("seq")[:_REPLAY_CHUNK])
        for event in chunk:
            cursor = event.seq
            seen = role in event.audience_roles or member_id in event.audience_members
            if seen and (not types or event.type in types):
                events.append(event_frame(event, replay=True))
                if len(events) == limit:
                    break
        if len(chunk) < _REPLAY_CHUNK and len(events) < limit:
            cursor = window_end  # the window was read to its end
    return HistoryPage(events=events, next_after=cursor if cursor < upto else None)
