"""Engine defects the state-machine test (test_state_machine.py) found, each pinned down on its own
against the real database and event log."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.models import Event
from records.selectors import wedding_state
from records.services import SyncRefused, SyncRequest, SyncResult, actor_for_member, record_sync
from tests.personas import WeddingParty
from wedsync.models import Member, TimelineItem

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis]


def sync(member: Member, kind: str, record_id: int | None, base: int | None, **changes: Any) -> SyncResult:
    return record_sync(
        actor=actor_for_member(member),
        request=SyncRequest(kind=kind, record_id=record_id, base_version=base, changes=changes, op_id=None),
    )


def test_times_in_replies_and_events_are_in_utc_as_a_reload_shows_them(party: WeddingParty) -> None:
    # Found: values echoed the client's offset ("+02:00") until the record was read back.
    created = sync(party.priya, "timeline_item", None, None, title="Vows", starts_at="2027-06-12T15:00:00+02:00")
    task = sync(party.priya, "task", None, None, title="Chairs", due="2027-06-12T09:00:00-05:00")
    moved = sync(party.priya, "timeline_item", created.reply["id"], 1, starts_at="2027-06-12T19:30:00+02:00")
    assert created.reply["values"]["starts_at"] == "2027-06-12T13:00:00Z"
    assert task.reply["values"]["due"] == "2027-06-12T14:00:00Z"
    assert moved.reply["values"]["starts_at"] == "2027-06-12T17:30:00Z"
    sent = [e.data["values"]["starts_at"] for e in Event.objects.filter(type="record.updated")]
    assert sent == ["2027-06-12T17:30:00Z"] * 2  # one event per part of the audience (ceremony details)
    (reloaded,) = wedding_state(actor=actor_for_member(party.priya))["records"]["timeline_item"]
    assert reloaded["values"] == moved.reply["values"]


def test_a_stale_deletion_tells_whoever_it_overwrote(party: WeddingParty) -> None:
    # Found: a deletion that had not seen a member's change removed it without a notice to them.
    rsvp = sync(party.gil, "rsvp", None, None, status="pending").reply["id"]
    sync(party.gil, "rsvp", rsvp, 1, status="attending")  # version 2
    deleted = record_sync(
        actor=actor_for_member(party.ana),
        request=SyncRequest(kind="rsvp", record_id=rsvp, base_version=1, changes={}, delete=True),
    )
    assert deleted.reply["deleted"] and deleted.outcome == "merged"  # last write wins, over a change it missed
    (notice,) = Event.objects.filter(type="record.conflict")
    assert notice.audience_members == [party.gil.pk] and notice.audience_roles == []
    assert {key: notice.data[key] for key in ("reason", "fields", "current", "deleted", "version")} == {
        "reason": "overwritten",
        "fields": ["status"],
        "current": {},
        "deleted": True,
        "version": deleted.reply["version"],
    }
    assert notice.data["by"]["member"] == party.ana.pk


def test_a_fresh_deletion_tells_nobody_it_overwrote(party: WeddingParty) -> None:
    rsvp = sync(party.gil, "rsvp", None, None, status="pending").reply["id"]
    sync(party.gil, "rsvp", rsvp, 1, status="attending")
    record_sync(
        actor=actor_for_member(party.ana),
        request=SyncRequest(kind="rsvp", record_id=rsvp, base_version=2, changes={}, delete=True),
    )
    assert not Event.objects.filter(type="record.conflict").exists()  # the couple had seen the change


def test_a_timeline_item_created_without_a_start_is_invalid_not_a_server_error(party: WeddingParty) -> None:
    # Found: the row's NOT NULL starts_at failed the insert, and the socket answered server_error.
    with pytest.raises(SyncRefused) as refused:
        sync(party.priya, "timeline_item", None, None, title="Cake")
    assert refused.value.code == "invalid" and "starts_at" in refused.value.message
    assert not TimelineItem.objects.exists() and not Event.objects.exists()


def test_a_reply_names_no_field_the_sender_may_not_see(party: WeddingParty) -> None:
    # Found: a caterer's stale deletion that lost was answered lost: [..., "ceremony_notes", ...].
    item = sync(party.priya, "timeline_item", None, None, title="Vows", starts_at="2027-06-12T15:00:00Z").reply["id"]
    sync(party.priya, "timeline_item", item, 1, title="I do")
    lost = record_sync(
        actor=actor_for_member(party.carmen),
        request=SyncRequest(kind="timeline_item", record_id=item, base_version=1, changes={}, delete=True),
    )
    assert lost.outcome == "overridden" and "title" in lost.reply["lost"]
    assert "ceremony_notes" not in lost.reply["lost"] and "ceremony_notes" not in lost.reply["values"]
    (notice,) = Event.objects.filter(type="record.conflict")
    assert notice.data["fields"] == lost.reply["lost"]  # the notice withheld it already
