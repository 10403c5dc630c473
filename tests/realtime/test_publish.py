"""Storing events: gap-free seq, idempotency, audiences, and who may publish what."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from realtime.audience import audience_default
from realtime.models import Event, WeddingStream
from realtime.names import EventType, Priority
from realtime.services.events import PublishRefused, member_event_publish
from records.services import SyncRefused, SyncRequest, actor_for_member, record_sync
from tests.concurrency import race
from tests.factories import MemberFactory, RsvpFactory, TaskFactory, TimelineItemFactory
from tests.personas import WeddingParty
from wedsync.models import AuditLog, Member
from wedsync.permissions import Role, build_matrix

pytestmark = pytest.mark.django_db

EVERY_ROLE = {role.value for role in Role}


def chat(party: WeddingParty, text: str = "hello", **kwargs):
    return member_event_publish(member=party.priya, type_name="chat.message", data={"text": text}, **kwargs)


def test_seq_counts_up_per_wedding(party: WeddingParty) -> None:
    assert [chat(party, str(i)).seq for i in range(3)] == [1, 2, 3]
    stored = list(Event.objects.filter(wedding=party.wedding).values_list("seq", "type", "priority"))
    assert stored == [
        (1, "chat.message", Priority.NORMAL),
        (2, "chat.message", Priority.NORMAL),
        (3, "chat.message", Priority.NORMAL),
    ]
    assert WeddingStream.objects.get(wedding=party.wedding).last_seq == 3


def test_sender_is_frozen_on_the_event(party: WeddingParty) -> None:
    published = chat(party)
    event = Event.objects.get(pk=published.id)
    assert event.sender == {"member": party.priya.pk, "role": "planner", "name": party.priya.name}


def test_idempotency_key_stores_once(party: WeddingParty) -> None:
    first = chat(party, idempotency_key="retry-1")
    again = chat(party, "different text, same key", idempotency_key="retry-1")
    assert (again.id, again.seq, again.duplicate) == (first.id, first.seq, True)
    assert Event.objects.count() == 1
    other_sender = member_event_publish(
        member=party.ana, type_name="chat.message", data={"text": "x"}, idempotency_key="retry-1"
    )
    assert not other_sender.duplicate and other_sender.seq == 2


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_publishers_get_distinct_gap_free_seqs(party: WeddingParty) -> None:
    results = race(lambda: [chat(party, f"m{i}").seq for i in range(10)], threads=6)
    seqs = [seq for result in results for seq in result]  # type: ignore[union-attr]
    assert sorted(seqs) == list(range(1, 61))
    assert sorted(Event.objects.values_list("seq", flat=True)) == list(range(1, 61))


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_key_store_it_once_and_leave_no_gap(party: WeddingParty) -> None:
    results = race(lambda: chat(party, idempotency_key="same-retry"), threads=6)
    assert {result.seq for result in results} == {1}  # type: ignore[union-attr]
    assert sum(not result.duplicate for result in results) == 1  # type: ignore[union-attr]
    assert chat(party, "next").seq == 2  # the retries gave back the seqs they took
    assert WeddingStream.objects.get(wedding=party.wedding).last_seq == 2


def test_a_retry_inside_a_larger_transaction_keeps_the_rest_of_it(party: WeddingParty) -> None:
    first = chat(party, idempotency_key="retry-2")
    with transaction.atomic():
        again = chat(party, "a retry", idempotency_key="retry-2")
        later = chat(party, "after the retry")
    assert again.duplicate and again.seq == first.seq
    assert later.seq == first.seq + 1
    assert list(Event.objects.order_by("seq").values_list("seq", flat=True)) == [first.seq, later.seq]


def test_the_first_event_creates_the_stream_with_an_epoch(party: WeddingParty) -> None:
    WeddingStream.objects.filter(wedding=party.wedding).delete()
    assert chat(party).seq == 1
    stream = WeddingStream.objects.get(wedding=party.wedding)
    assert stream.last_seq == 1 and len(stream.epoch) >= 16


@pytest.mark.parametrize(
    ("event_type", "roles"),
    [
        (EventType.CHAT_MESSAGE, EVERY_ROLE),
        (EventType.EMERGENCY_ALERT, EVERY_ROLE),
        (EventType.VENDOR_STATUS, {"couple", "planner"}),
    ],
)
def test_default_audience_roles(party: WeddingParty, event_type: EventType, roles: set[str]) -> None:
    audience = audience_default(event_type=event_type, wedding_id=party.wedding.pk, sender=party.priya, data={})
    assert audience.roles == roles
    assert audience.members == {party.priya.pk}


# Records change through the sync engine, which gives each record.* event its record's audience.


def record_sync_as(member: Member, kind: str, record_id: int | None, **changes: object) -> Event:
    """One change through the engine as ``member``; the one event it stored."""
    result = record_sync(
        actor=actor_for_member(member),
        request=SyncRequest(
            kind=kind, record_id=record_id, base_version=None if record_id is None else 1, changes=changes
        ),
    )
    return Event.objects.get(wedding_id=member.wedding_id, seq=result.reply["seq"])


CEREMONY_VIEWERS = {"couple", "planner", "venue", "photographer", "videographer", "musician", "officiant"}


def timeline_events(member: Member, item_id: int, **changes: object) -> list[Event]:
    """The events of one timeline change as ``member``, the reply's (the author's part) last."""
    last = record_sync_as(member, "timeline_item", item_id, **changes)
    events = list(
        Event.objects.filter(wedding_id=member.wedding_id, seq__gt=last.seq - 3, seq__lte=last.seq).order_by("seq")
    )
    return [e for e in events if e.data["id"] == item_id and e.data["version"] == last.data["version"]]


@pytest.mark.requires_postgres
def test_a_timeline_change_reaches_every_role_that_may_view_the_timeline(party: WeddingParty) -> None:
    item = TimelineItemFactory(wedding=party.wedding, ceremony_notes="Rings with the best man")
    item.assigned_vendors.set([party.paula])
    others, authors = timeline_events(party.priya, item.pk, title="Speeches")
    # Every role, assigned or not: a guest or the caterer who loaded the timeline hears it moved.
    assert set(others.audience_roles) | set(authors.audience_roles) == EVERY_ROLE
    assert set(authors.audience_roles) == CEREMONY_VIEWERS
    assert authors.data["values"]["ceremony_notes"] == "Rings with the best man"
    assert set(others.audience_roles) == EVERY_ROLE - CEREMONY_VIEWERS
    assert "ceremony_notes" not in others.data["values"]
    # The reply names the event the author's own devices get, whichever part that is.
    caterers = timeline_events(party.carmen, item.pk, notes="Cake at nine")
    assert set(caterers[-1].audience_roles) == EVERY_ROLE - CEREMONY_VIEWERS


@pytest.mark.requires_postgres
def test_the_timeline_audience_follows_the_deployments_matrix(party: WeddingParty, settings: Any) -> None:
    settings.PERMISSION_MATRIX = build_matrix(overrides={"guest": {"view_timeline": "none"}})
    item = TimelineItemFactory(wedding=party.wedding)
    heard = {role for event in timeline_events(party.priya, item.pk, title="Speeches") for role in event.audience_roles}
    assert heard == EVERY_ROLE - {"guest"}


@pytest.mark.requires_postgres
def test_task_audience_is_couple_planner_and_assignee(party: WeddingParty) -> None:
    task = TaskFactory(wedding=party.wedding, assignee=party.flora)
    event = record_sync_as(party.ana, "task", task.pk, status="done")
    assert (event.type, event.audience_roles) == ("record.updated", ["couple", "planner"])
    assert set(event.audience_members) - {party.ana.pk} == {party.flora.pk}  # and the author's own devices


@pytest.mark.requires_postgres
def test_rsvp_audience_is_couple_planner_and_that_guest(party: WeddingParty) -> None:
    event = record_sync_as(party.gil, "rsvp", None, status="attending")
    assert (event.type, event.audience_roles, event.audience_members) == (
        "record.created",
        ["couple", "planner"],
        [party.gil.pk],
    )


def test_to_narrows_but_never_widens(party: WeddingParty) -> None:
    published = member_event_publish(
        member=party.paula,
        type_name="vendor.status",
        data={"activity": "en_route"},
        to=["role:planner", "role:guest", f"member:{party.carmen.pk}"],
    )
    event = Event.objects.get(pk=published.id)
    # vendor.status reaches couple + planner: guests and the caterer are outside it.
    assert (event.audience_roles, event.audience_members) == (["planner"], [party.paula.pk])


def test_to_with_a_member_of_another_wedding_is_invalid(party: WeddingParty) -> None:
    with pytest.raises(PublishRefused) as refused:
        chat(party, to=["member:999999"])
    assert refused.value.code == "invalid" and "member:999999" in refused.value.message


@pytest.mark.parametrize(
    ("persona", "type_name", "data"),
    [
        ("gil", "emergency.alert", {"message": "help"}),
        ("gil", "vendor.status", {"activity": "en_route"}),
        ("paula", "vendor.status", {"activity": "en_route", "member": 1}),
        ("priya", "alert.raised", {}),
        ("priya", "record.updated", {}),
    ],
)
def test_forbidden_publishes_are_refused_and_audited(
    party: WeddingParty, persona: str, type_name: str, data: dict
) -> None:
    member = getattr(party, persona)
    with pytest.raises(PublishRefused) as refused:
        member_event_publish(member=member, type_name=type_name, data=data)
    assert refused.value.code == "forbidden"
    assert Event.objects.count() == 0
    entry = AuditLog.objects.get(action="realtime.publish.refuse")
    assert (entry.actor_id, entry.wedding_id, entry.outcome) == (member.user_id, party.wedding.pk, "refused")


@pytest.mark.parametrize("type_name", ["rsvp.updated", "timeline.changed", "task.updated"])
def test_the_retired_record_types_are_invalid_and_point_at_sync(party: WeddingParty, type_name: str) -> None:
    with pytest.raises(PublishRefused) as refused:
        member_event_publish(member=party.priya, type_name=type_name, data={})
    assert refused.value.code == "invalid" and "sync" in refused.value.message
    assert not Event.objects.exists()


def _other_guest(party: WeddingParty) -> Member:
    return MemberFactory(wedding=party.wedding, role="guest")


# Who may change what, once published as record types, is now the engine's to refuse (and audit).
@pytest.mark.requires_postgres
@pytest.mark.parametrize(
    ("persona", "kind", "target", "changes"),
    [
        ("gil", "timeline_item", "item", {"title": "x"}),
        ("olu", "timeline_item", "item", {"title": "x"}),
        ("gil", "rsvp", "other_rsvp", {"status": "declined"}),
        ("carmen", "rsvp", "gil_rsvp", {"status": "declined"}),
        ("carmen", "task", "task", {"status": "done"}),
    ],
)
def test_forbidden_record_changes_are_refused_and_audited(
    party: WeddingParty, persona: str, kind: str, target: str, changes: dict
) -> None:
    records = {
        "item": lambda: TimelineItemFactory(wedding=party.wedding),
        "other_rsvp": lambda: RsvpFactory(guest=_other_guest(party)),
        "gil_rsvp": lambda: RsvpFactory(guest=party.gil),
        "task": lambda: TaskFactory(wedding=party.wedding, assignee=party.flora),
    }
    record: Any = records[target]()
    member = getattr(party, persona)
    with pytest.raises(SyncRefused) as refused:
        record_sync(
            actor=actor_for_member(member),
            request=SyncRequest(kind=kind, record_id=record.pk, base_version=1, changes=changes),
        )
    assert refused.value.code == "forbidden"
    assert Event.objects.count() == 0
    record.refresh_from_db()
    assert record.version == 1
    entry = AuditLog.objects.get(action="record.refuse")
    assert (entry.actor_id, entry.wedding_id, entry.outcome) == (member.user_id, party.wedding.pk, "refused")


@pytest.mark.requires_postgres
def test_task_assignee_may_change_the_status_of_their_task(party: WeddingParty) -> None:
    task = TaskFactory(wedding=party.wedding, assignee=party.carmen)
    event = record_sync_as(party.carmen, "task", task.pk, status="done")
    assert (event.seq, event.type, event.data["changed"], event.data["actor"]["member"]) == (
        1,
        "record.updated",
        ["status"],
        party.carmen.pk,
    )


@pytest.mark.parametrize(
    ("type_name", "data", "message"),
    [
        ("chat.shout", {"text": "x"}, "unknown event type"),
        ("chat.message", {}, "data: Object missing required field `text`"),
        ("chat.message", {"text": "x", "html": "<b>"}, "unknown field `html`"),
        ("chat.message", {"text": ""}, "data: Expected `str` of length >= 1"),
        ("emergency.alert", {"message": "x", "location": "moon"}, "$.location"),
    ],
)
def test_invalid_publishes_name_the_problem(party: WeddingParty, type_name: str, data: dict, message: str) -> None:
    with pytest.raises(PublishRefused) as refused:
        member_event_publish(member=party.priya, type_name=type_name, data=data)
    assert refused.value.code == "invalid"
    assert message in refused.value.message
    assert Event.objects.count() == 0


def test_priority_rules(party: WeddingParty) -> None:
    low = chat(party, priority_name="low")
    assert Event.objects.get(pk=low.id).priority == Priority.LOW
    for name in ("critical", "emergency"):
        with pytest.raises(PublishRefused):
            chat(party, priority_name=name)
    with pytest.raises(PublishRefused):
        member_event_publish(
            member=party.priya, type_name="emergency.alert", data={"message": "x"}, priority_name="low"
        )
    alert = member_event_publish(
        member=party.victor, type_name="emergency.alert", data={"message": "fire in the kitchen"}
    )
    assert Event.objects.get(pk=alert.id).priority == Priority.EMERGENCY
