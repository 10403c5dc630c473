"""The sync engine (records.services): each strategy in both orders, batches, op-id replays, hidden
fields, deletions, permissions and conflicts, against the real database and event log."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.models import Event
from records.models import Conflict, RecordTombstone, Strategy, SyncOpResult, WeddingStrategy
from records.services import (
    SyncRefused,
    SyncRequest,
    SyncResult,
    actor_for_member,
    conflict_resolve,
    record_sync,
    records_sync_batch,
)
from tests.factories import MemberFactory, RsvpFactory, TaskFactory, TimelineItemFactory, UserFactory
from tests.personas import WeddingParty
from wedsync.models import AuditLog, Member, Rsvp, Task, TimelineItem

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis]


def sync(
    member: Member, kind: str, record_id: int | None, base: int | None, op_id: str | None = None, **changes: Any
) -> SyncResult:
    return record_sync(
        actor=actor_for_member(member),
        request=SyncRequest(kind=kind, record_id=record_id, base_version=base, changes=changes, op_id=op_id),
    )


def events(event_type: str) -> list[Event]:
    return list(Event.objects.filter(type=event_type).order_by("seq"))


def audience_of(event: Event) -> tuple[list[str], list[int]]:
    return event.audience_roles, event.audience_members


# A timeline change reaches every role that may view the timeline, in two parts by ceremony details.
SEES_CEREMONY: tuple[list[str], list[int]] = (
    ["couple", "musician", "officiant", "photographer", "planner", "venue", "videographer"],
    [],
)
WITHOUT_CEREMONY: tuple[list[str], list[int]] = (["caterer", "florist", "guest"], [])


@pytest.fixture
def item(party: WeddingParty) -> TimelineItem:
    item = TimelineItemFactory(wedding=party.wedding, title="First dance", ceremony_notes="Rings after vows")
    item.assigned_vendors.set([party.paula, party.carmen])
    return item


# --- fresh edits ---------------------------------------------------------------------------------------


def test_a_new_timeline_item_is_applied_stored_and_sent_to_its_audience(party: WeddingParty) -> None:
    result = sync(
        party.priya,
        "timeline_item",
        None,
        None,
        op_id="n1",
        title="Cake",
        starts_at="2026-06-13T19:00:00+02:00",
        assigned_vendors=[party.carmen.pk],
    )
    assert (result.outcome, result.reply["version"]) == ("applied", 1)
    item = TimelineItem.objects.get(pk=result.reply["id"])
    assert item.title == "Cake" and item.starts_at.isoformat() == "2026-06-13T17:00:00+00:00"
    created = events("record.created")
    # Two parts of the audience: the caterer may not see ceremony details, so hers is another event.
    assert len(created) == 2
    full, withheld = sorted(created, key=lambda event: "ceremony_notes" in event.data["values"], reverse=True)
    assert audience_of(full) == SEES_CEREMONY
    assert audience_of(withheld) == WITHOUT_CEREMONY
    assert "ceremony_notes" not in withheld.data["values"] and withheld.data["values"]["title"] == "Cake"
    assert result.reply["seq"] == max(event.seq for event in created) == full.seq  # the planner's part


def test_a_fresh_change_bumps_the_version_and_says_what_changed(party: WeddingParty, item: TimelineItem) -> None:
    result = sync(party.priya, "timeline_item", item.pk, 1, title="First dance (moved)")
    assert (result.outcome, result.reply["version"], result.reply["changed"]) == ("applied", 2, ["title"])
    item.refresh_from_db()
    assert (item.title, item.version) == ("First dance (moved)", 2)
    updated = events("record.updated")
    # Assigned or not, every role hears of it; the caterer's part is without ceremony details.
    assert [audience_of(e) for e in updated] == [WITHOUT_CEREMONY, SEES_CEREMONY]
    for event in updated:
        assert event.data["changed"] == ["title"] and event.data["version"] == 2 and event.data["outcome"] == "applied"


def test_a_change_of_vendors_reaches_the_old_and_the_new_and_shows_the_new(
    party: WeddingParty, item: TimelineItem
) -> None:
    result = sync(party.priya, "timeline_item", item.pk, 1, assigned_vendors=[party.paula.pk, party.victor.pk])
    assert result.reply["values"]["assigned_vendors"] == sorted([party.paula.pk, party.victor.pk])
    updated = events("record.updated")
    # The caterer, unassigned, hears of it (without ceremony details); the venue, assigned, too.
    assert [audience_of(e) for e in updated] == [WITHOUT_CEREMONY, SEES_CEREMONY]
    assert all(e.data["values"]["assigned_vendors"] == sorted([party.paula.pk, party.victor.pk]) for e in updated)

    sync(party.paula, "timeline_item", item.pk, 2, title="First dance at nine")
    latest = [e for e in events("record.updated") if e.data["version"] == 3]
    assert [audience_of(e) for e in latest] == [WITHOUT_CEREMONY, SEES_CEREMONY]  # the photographer's part last


# --- field_merge (timeline default) --------------------------------------------------------------------


def test_field_merge_applies_changes_to_different_fields_both_ways(party: WeddingParty, item: TimelineItem) -> None:
    first = sync(party.priya, "timeline_item", item.pk, 1, title="Dance")
    second = sync(party.paula, "timeline_item", item.pk, 1, location="reception_hall")
    assert (first.outcome, second.outcome) == ("applied", "merged")
    item.refresh_from_db()
    assert (item.title, item.location, item.version) == ("Dance", "reception_hall", 3)


@pytest.mark.parametrize("higher_first", [True, False])
def test_field_merge_gives_a_contested_field_to_the_higher_rank(
    party: WeddingParty, item: TimelineItem, higher_first: bool
) -> None:
    planner = (party.priya, "planner title")
    vendor = (party.paula, "photographer title")
    (first, first_title), (second, second_title) = (planner, vendor) if higher_first else (vendor, planner)
    sync(first, "timeline_item", item.pk, 1, title=first_title)
    result = sync(second, "timeline_item", item.pk, 1, title=second_title, notes="bring the ladder")
    item.refresh_from_db()
    assert item.title == "planner title"
    assert item.notes == "bring the ladder"  # the uncontested field applies either way
    if higher_first:
        assert (result.outcome, result.reply["lost"]) == ("overridden", ["title"])
        assert result.reply["values"]["title"] == "planner title"
        notice = events("record.conflict")[-1]
        assert notice.data["reason"] == "overridden" and notice.audience_members == [party.paula.pk]
    else:
        assert result.outcome == "merged"
        notice = events("record.conflict")[-1]
        assert notice.data["reason"] == "overwritten" and notice.audience_members == [party.paula.pk]
        assert notice.data["current"] == {"title": "planner title"}


def test_the_same_value_on_both_sides_is_no_contest(party: WeddingParty, item: TimelineItem) -> None:
    sync(party.ana, "timeline_item", item.pk, 1, title="Same")
    result = sync(party.paula, "timeline_item", item.pk, 1, title="Same", notes="x")
    assert result.outcome == "merged" and not events("record.conflict")


def test_an_authors_own_earlier_edit_never_contests_their_next(party: WeddingParty, item: TimelineItem) -> None:
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy=Strategy.MANUAL)
    sync(party.paula, "timeline_item", item.pk, 1, title="A")
    result = sync(party.paula, "timeline_item", item.pk, 1, title="B")
    assert result.outcome == "applied" and Conflict.objects.count() == 0


# --- role_hierarchy (task default) ---------------------------------------------------------------------


@pytest.mark.parametrize("couple_first", [True, False])
def test_role_hierarchy_lets_the_higher_rank_win_the_whole_edit(party: WeddingParty, couple_first: bool) -> None:
    task = TaskFactory(wedding=party.wedding, assignee=party.flora, title="Bouquets")
    edits = [(party.ana, {"title": "Couple's"}), (party.priya, {"title": "Planner's", "status": "blocked"})]
    if not couple_first:
        edits.reverse()
    results = [sync(member, "task", task.pk, 1, **changes) for member, changes in edits]
    task.refresh_from_db()
    assert task.title == "Couple's"
    if couple_first:
        # The planner ranks lower: the whole edit loses, status included.
        assert results[1].outcome == "overridden" and task.status == "todo"
        assert results[1].reply["lost"] == ["status", "title"]
    else:
        assert results[1].outcome == "merged" and task.status == "blocked"
        assert events("record.conflict")[-1].audience_members == [party.priya.pk]


def test_an_assignee_may_change_only_the_status_of_their_task(party: WeddingParty) -> None:
    task = TaskFactory(wedding=party.wedding, assignee=party.flora)
    assert sync(party.flora, "task", task.pk, 1, status="done").outcome == "applied"
    with pytest.raises(SyncRefused) as refused:
        sync(party.flora, "task", task.pk, 2, title="mine now")
    assert refused.value.code == "forbidden"
    with pytest.raises(SyncRefused):
        sync(party.carmen, "task", task.pk, 2, status="todo")
    assert AuditLog.objects.filter(action="record.refuse").count() == 2


# --- last_write_wins (RSVP default) ---------------------------------------------------------------------


@pytest.mark.parametrize("guest_first", [True, False])
def test_last_write_wins_takes_the_later_edit_and_tells_the_earlier_writer(
    party: WeddingParty, guest_first: bool
) -> None:
    rsvp = RsvpFactory(guest=party.gil)
    edits = [(party.gil, "attending"), (party.priya, "declined")]
    if not guest_first:
        edits.reverse()
    results = [sync(member, "rsvp", rsvp.pk, 1, status=status) for member, status in edits]
    rsvp.refresh_from_db()
    assert rsvp.status == edits[1][1]
    assert results[1].outcome == "merged"
    notice = events("record.conflict")[-1]
    assert notice.data["reason"] == "overwritten" and notice.audience_members == [edits[0][0].pk]


def test_a_guest_answers_only_their_own_rsvp(party: WeddingParty) -> None:
    other_guest = MemberFactory(user=UserFactory(username="gwen"), wedding=party.wedding, role="guest")
    theirs = RsvpFactory(guest=other_guest)
    with pytest.raises(SyncRefused) as refused:
        sync(party.gil, "rsvp", theirs.pk, 1, status="declined")
    assert refused.value.code == "forbidden"
    mine = sync(party.gil, "rsvp", None, None, status="attending", meal="fish")
    assert mine.outcome == "applied" and Rsvp.objects.get(pk=mine.reply["id"]).guest_id == party.gil.pk
    with pytest.raises(SyncRefused) as refused:
        sync(party.gil, "rsvp", None, None, guest=other_guest.pk, status="maybe")
    assert refused.value.code == "forbidden"
    rsvp_events = events("record.created")
    assert [audience_of(e) for e in rsvp_events] == [(["couple", "planner"], [party.gil.pk])]


# --- manual ----------------------------------------------------------------------------------------------


def test_manual_keeps_both_sides_as_a_conflict_and_resolving_applies_the_choice(
    party: WeddingParty, item: TimelineItem
) -> None:
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy=Strategy.MANUAL)
    sync(party.priya, "timeline_item", item.pk, 1, title="Planner's")
    result = sync(party.paula, "timeline_item", item.pk, 1, title="Paula's", notes="uncontested")
    assert result.outcome == "conflict"
    item.refresh_from_db()
    assert (item.title, item.notes, item.version) == ("Planner's", "", 2)  # nothing of the edit applied
    conflict = Conflict.objects.get(pk=result.reply["conflict"])
    assert (conflict.theirs, conflict.mine) == ({"title": "Planner's"}, {"title": "Paula's", "notes": "uncontested"})
    assert conflict.against == [party.priya.pk]
    told = events("record.conflict")
    assert told and all(e.data["conflict"] == conflict.pk for e in told)
    with pytest.raises(SyncRefused) as refused:
        conflict_resolve(actor=actor_for_member(party.paula), conflict_id=conflict.pk, resolution="mine")
    assert refused.value.code == "forbidden"
    conflict, applied = conflict_resolve(
        actor=actor_for_member(party.priya), conflict_id=conflict.pk, resolution="mine"
    )
    item.refresh_from_db()
    assert (conflict.status, item.title, item.notes, item.version) == ("resolved", "Paula's", "uncontested", 3)
    assert applied is not None and applied.outcome == "applied"
    resolved = events("conflict.resolved")
    assert resolved and all(event.data["resolution"] == "mine" for event in resolved)
    assert "photographer" in {role for event in resolved for role in event.audience_roles}  # Paula's role


def test_a_custom_resolution_applies_the_given_values(party: WeddingParty, item: TimelineItem) -> None:
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy=Strategy.MANUAL)
    sync(party.priya, "timeline_item", item.pk, 1, title="A")
    conflict_id = sync(party.paula, "timeline_item", item.pk, 1, title="B").reply["conflict"]
    conflict_resolve(
        actor=actor_for_member(party.ana), conflict_id=conflict_id, resolution="custom", values={"title": "A and B"}
    )
    item.refresh_from_db()
    assert item.title == "A and B"
    with pytest.raises(SyncRefused) as refused:
        conflict_resolve(actor=actor_for_member(party.ana), conflict_id=conflict_id, resolution="theirs")
    assert refused.value.code == "conflict"


# --- batches, op ids, deletions, hidden fields ------------------------------------------------------------


def test_a_batch_is_all_or_nothing_and_names_the_op_that_failed(party: WeddingParty, item: TimelineItem) -> None:
    task = TaskFactory(wedding=party.wedding)
    seq_before = Event.objects.count()
    requests = [
        SyncRequest(kind="timeline_item", record_id=item.pk, base_version=1, changes={"title": "moved"}, op_id="b1"),
        SyncRequest(kind="task", record_id=task.pk, base_version=1, changes={"status": "done"}, op_id="b2"),
        SyncRequest(kind="task", record_id=task.pk, base_version=2, changes={"status": "sideways"}, op_id="b3"),
    ]
    with pytest.raises(SyncRefused) as refused:
        records_sync_batch(actor=actor_for_member(party.priya), requests=requests)
    assert refused.value.code == "invalid" and refused.value.details["op"] == 2
    assert refused.value.message.startswith("ops[2]: changes:")
    item.refresh_from_db()
    task.refresh_from_db()
    assert (item.title, item.version, task.status, task.version) == ("First dance", 1, "todo", 1)
    assert Event.objects.count() == seq_before and not SyncOpResult.objects.exists()
    requests[2] = SyncRequest(kind="task", record_id=task.pk, base_version=2, changes={"status": "blocked"}, op_id="b3")
    results = records_sync_batch(actor=actor_for_member(party.priya), requests=requests)
    assert [r.outcome for r in results] == ["applied", "applied", "applied"]


def test_a_batch_with_an_op_that_would_lose_applies_nothing(party: WeddingParty) -> None:
    task = TaskFactory(wedding=party.wedding)
    sync(party.ana, "task", task.pk, 1, title="couple's")
    with pytest.raises(SyncRefused) as refused:
        records_sync_batch(
            actor=actor_for_member(party.priya),
            requests=[
                SyncRequest(kind="task", record_id=None, base_version=None, changes={"title": "new"}, op_id="c1"),
                SyncRequest(kind="task", record_id=task.pk, base_version=1, changes={"title": "planner's"}, op_id="c2"),
            ],
        )
    assert (refused.value.code, refused.value.details["op"], refused.value.details["outcome"]) == (
        "conflict",
        1,
        "overridden",
    )
    assert Task.objects.count() == 1 and not events("record.conflict")


def test_a_resent_op_id_returns_the_first_outcome_and_changes_nothing(party: WeddingParty, item: TimelineItem) -> None:
    first = sync(party.priya, "timeline_item", item.pk, 1, op_id="phone-7", title="once")
    again = sync(party.priya, "timeline_item", item.pk, 1, op_id="phone-7", title="once")
    assert again.duplicate and again.reply == first.reply
    item.refresh_from_db()
    assert item.version == 2 and len(events("record.updated")) == 2  # two parts of one change, not two changes


def test_an_edit_of_a_deleted_record_is_not_found_with_the_deletions_seq(
    party: WeddingParty, item: TimelineItem
) -> None:
    deleted = record_sync(
        actor=actor_for_member(party.priya),
        request=SyncRequest(
            kind="timeline_item", record_id=item.pk, base_version=1, changes={}, delete=True, op_id="d"
        ),
    )
    assert deleted.reply["deleted"] is True
    tombstone = RecordTombstone.objects.get(record_id=item.pk)
    assert tombstone.seq == min(e.seq for e in events("record.deleted"))
    with pytest.raises(SyncRefused) as refused:
        sync(party.paula, "timeline_item", item.pk, 1, title="too late")
    assert refused.value.code == "not_found" and refused.value.details["deleted_seq"] == tombstone.seq


def test_ceremony_details_are_neither_shown_to_nor_changed_by_roles_without_them(
    party: WeddingParty, item: TimelineItem
) -> None:
    with pytest.raises(SyncRefused) as refused:
        sync(party.carmen, "timeline_item", item.pk, 1, ceremony_notes="peek")
    assert refused.value.code == "forbidden"
    result = sync(party.carmen, "timeline_item", item.pk, 1, notes="canapés at 6")
    assert "ceremony_notes" not in result.reply["values"]
    caterers = [e for e in events("record.updated") if "caterer" in e.audience_roles]
    assert caterers and all("ceremony_notes" not in e.data["values"] for e in caterers)
    planners = [e for e in events("record.updated") if "planner" in e.audience_roles]
    assert planners[0].data["values"]["ceremony_notes"] == "Rings after vows"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"title": ""}, "changes: Expected `str` of length >= 1"),
        ({"starts_at": "2026-06-13T19:00:00"}, "timezone"),
        ({"colour": "red"}, "unknown field `colour`"),
        ({"ends_at": "2000-01-01T00:00:00Z"}, "ends_at"),
        ({"assigned_vendors": [10**9]}, "assigned_vendors"),
    ],
)
def test_bad_changes_are_invalid_and_write_nothing(
    party: WeddingParty, item: TimelineItem, changes: dict, message: str
) -> None:
    with pytest.raises(SyncRefused) as refused:
        sync(party.priya, "timeline_item", item.pk, 1, **changes)
    assert refused.value.code == "invalid" and message in refused.value.message
    item.refresh_from_db()
    assert item.version == 1 and not Event.objects.exists()


def test_base_version_is_required_and_not_from_the_future(party: WeddingParty, item: TimelineItem) -> None:
    for base in (None, 5):
        with pytest.raises(SyncRefused) as refused:
            sync(party.priya, "timeline_item", item.pk, base, title="x")
        assert refused.value.code == "invalid" and "base_version" in refused.value.message


def test_op_ids_revisions_and_tombstones_go_with_the_event_log(party: WeddingParty, item: TimelineItem) -> None:
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from records.models import RecordRevision
    from records.tasks import purge_expired_sync_history

    with time_machine.travel(timezone.now() - timedelta(days=8), tick=False):
        sync(party.priya, "timeline_item", item.pk, 1, op_id="old", title="old")
    sync(party.priya, "timeline_item", item.pk, 2, op_id="new", title="new")
    assert purge_expired_sync_history.apply().get() == 2  # the old op id and its revision
    assert list(SyncOpResult.objects.values_list("op_id", flat=True)) == ["new"]
    assert list(RecordRevision.objects.values_list("version", flat=True)) == [3]
    # A base older than the kept revisions: the last writer is taken to have changed every field.
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy=Strategy.MANUAL)
    assert sync(party.paula, "timeline_item", item.pk, 1, notes="late").outcome == "conflict"
