"""When a resubscribing member's replay is recovered, and what it holds (PROTOCOL.md section 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from realtime.models import Event
from realtime.selectors import Replay, events_replay, member_for_publish, membership_for_topic, memberships_for_user
from realtime.services.events import member_event_publish
from tests.personas import WeddingParty, make_wedding_party

pytestmark = [pytest.mark.django_db]


def chat(party: WeddingParty, count: int) -> None:
    for n in range(count):
        member_event_publish(member=party.priya, type_name="chat.message", data={"text": f"m{n + 1}"})


def replay(party: WeddingParty, *, since: int | None, epoch: str | None = None) -> Replay:
    guest = party.gil
    return events_replay(
        wedding_id=party.wedding.pk, member_id=guest.pk, role=guest.role, since=since, epoch=epoch, min_priority=0
    )


def test_a_replay_holds_the_missed_events_in_order(party: WeddingParty) -> None:
    chat(party, 3)
    missed = replay(party, since=1)
    assert (missed.upto, missed.recovered, missed.first.seqs) == (3, True, [2, 3])
    assert [frame["data"]["text"] for frame in missed.first.frames] == ["m2", "m3"]
    assert all(frame["replay"] for frame in missed.first.frames)


def test_nothing_missed_is_recovered_without_events(party: WeddingParty) -> None:
    chat(party, 2)
    assert (replay(party, since=2).recovered, replay(party, since=2).first.frames) == (True, [])
    assert (replay(party, since=None).recovered, replay(party, since=None).upto) == (True, 2)


def test_a_missed_event_past_retention_is_not_recovered(party: WeddingParty, settings) -> None:
    chat(party, 3)
    Event.objects.filter(wedding=party.wedding, seq=2).update(
        created_at=timezone.now() - timedelta(days=settings.REALTIME_RETENTION_DAYS, minutes=1)
    )
    assert replay(party, since=1).recovered is False
    assert replay(party, since=2).recovered is True  # only newer events are missed


def test_a_purged_missed_event_is_not_recovered(party: WeddingParty) -> None:
    chat(party, 3)
    Event.objects.filter(wedding=party.wedding, seq__lte=2).delete()
    gone = replay(party, since=1)
    assert (gone.recovered, gone.first.frames, gone.upto) == (False, [], 3)
    assert replay(party, since=2).first.seqs == [3]


def test_too_much_to_replay_another_epoch_or_a_future_seq_is_not_recovered(party: WeddingParty, settings) -> None:
    chat(party, 3)
    settings.REALTIME_REPLAY_MAX = 1
    assert replay(party, since=1).recovered is False
    assert replay(party, since=2).recovered is True
    assert replay(party, since=2, epoch="another").recovered is False
    assert replay(party, since=4).recovered is False


def test_memberships_and_topic_access(party: WeddingParty) -> None:
    views, _heartbeat = memberships_for_user(user_id=party.gil.user_id)
    assert [(v.wedding_id, v.member_id, v.role) for v in views] == [(party.wedding.pk, party.gil.pk, "guest")]
    assert membership_for_topic(user_id=party.gil.user_id, wedding_id=party.wedding.pk).member_id == party.gil.pk
    party.gil.is_active = False
    party.gil.save()
    assert memberships_for_user(user_id=party.gil.user_id)[0] == []


def test_a_publishers_member_is_read_with_its_name_in_one_query(party: WeddingParty, django_assert_num_queries) -> None:
    party.priya.display_name = ""
    party.priya.save()
    with django_assert_num_queries(1):
        member = member_for_publish(user_id=party.priya.user_id, wedding_id=party.wedding.pk)
        assert member is not None
        assert (member.pk, member.role, member.wedding_id, member.is_vendor) == (
            party.priya.pk,
            "planner",
            party.wedding.pk,
            False,
        )
        assert member.name == party.priya.user.get_full_name() != ""
        assert member.user.get_username() == party.priya.user.username
    with django_assert_num_queries(1):  # the rest of the user loads when asked for
        assert member.user.email == party.priya.user.email


def test_no_publishers_member_for_an_outsider_or_an_inactive_member(party: WeddingParty) -> None:
    outsider = make_wedding_party().priya
    assert member_for_publish(user_id=outsider.user_id, wedding_id=party.wedding.pk) is None
    party.gil.is_active = False
    party.gil.save()
    assert member_for_publish(user_id=party.gil.user_id, wedding_id=party.wedding.pk) is None


def test_a_replay_is_read_a_page_at_a_time(party: WeddingParty, monkeypatch) -> None:
    from realtime import selectors

    chat(party, 7)
    monkeypatch.setattr(selectors, "_REPLAY_CHUNK", 3)
    missed = replay(party, since=1)
    assert (missed.upto, missed.first.seqs, missed.first.next_after) == (7, [2, 3, 4], 4)
    guest = party.gil
    pages = [missed.first]
    while pages[-1].next_after is not None:
        pages.append(
            selectors.events_replay_page(
                wedding_id=party.wedding.pk,
                member_id=guest.pk,
                role=guest.role,
                after=pages[-1].next_after,
                upto=missed.upto,
                min_priority=0,
            )
        )
    assert [page.seqs for page in pages] == [[2, 3, 4], [5, 6, 7]]
    assert [frame["data"]["text"] for page in pages for frame in page.frames] == [f"m{n}" for n in range(2, 8)]


def test_a_page_of_events_nobody_here_may_see_still_moves_the_replay_on(party: WeddingParty, monkeypatch) -> None:
    from realtime import selectors

    for _ in range(4):  # vendor.status goes to the couple and the planner only
        member_event_publish(member=party.carmen, type_name="vendor.status", data={"activity": "setup"})
    chat(party, 1)
    monkeypatch.setattr(selectors, "_REPLAY_CHUNK", 2)
    missed = replay(party, since=0)
    assert (missed.first.seqs, missed.first.next_after) == ([], 2)
    page = selectors.events_replay_page(
        wedding_id=party.wedding.pk, member_id=party.gil.pk, role="guest", after=2, upto=5, min_priority=0
    )
    assert (page.seqs, page.next_after) == ([], 4)
    page = selectors.events_replay_page(
        wedding_id=party.wedding.pk, member_id=party.gil.pk, role="guest", after=4, upto=5, min_priority=0
    )
    assert (page.seqs, page.next_after) == ([5], None)
