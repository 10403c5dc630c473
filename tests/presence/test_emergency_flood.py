"""One member pressing the emergency button again and again (issue 16 item 4): the alarms are all
stored and sent, never rate limited, but while that member's emergency is open each further alarm
updates it instead of opening another one with its own escalation and re-sends; and a member may
open only so many new emergencies in ten minutes (decision 0011)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import time_machine
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from monitoring.models import Escalation
from monitoring.services.escalation import escalations_create_due
from presence.emergency.services import emergency_resolve
from presence.models import Emergency
from realtime.models import Event
from realtime.selectors import unacknowledged_events
from realtime.services.events import PublishedEvent, PublishRefused, member_event_publish
from tests.concurrency import race
from tests.personas import WeddingParty, make_wedding_party
from wedsync.models import AuditLog, Member

pytestmark = [pytest.mark.requires_postgres]

T0 = dt.datetime(2026, 6, 13, 15, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def alarm(member: Member, message: str = "Fire in the kitchen", **kwargs) -> PublishedEvent:
    return member_event_publish(
        member=member, type_name="emergency.alert", data={"message": message, "location": "reception_hall"}, **kwargs
    )


def resolve_all(party: WeddingParty) -> None:
    for emergency in Emergency.objects.filter(wedding=party.wedding, resolved_at__isnull=True):
        emergency_resolve(wedding_id=party.wedding.pk, emergency_id=emergency.pk, user=party.priya.user)


@pytest.mark.django_db
def test_a_members_repeats_update_their_open_emergency_and_every_alarm_is_stored(party: WeddingParty) -> None:
    first = alarm(party.carmen)
    repeats = [alarm(party.carmen, f"Still burning ({n})") for n in range(1, 5)]
    other = alarm(party.victor, "A guest fainted")  # another member's alarm is an emergency of its own

    fire, faint = Emergency.objects.get(raised_by=party.carmen), Emergency.objects.get(raised_by=party.victor)
    assert (fire.raised_event_id, fire.repeats, fire.resolved_at) == (first.id, 4, None)
    assert fire.repeated_at is not None
    assert (faint.raised_event_id, faint.repeats) == (other.id, 0)
    # Nothing is lost: every alarm is an emergency.alert of its own seq, in order.
    events = list(Event.objects.filter(type="emergency.alert").order_by("seq"))
    assert [e.seq for e in events] == [first.seq, *(r.seq for r in repeats), other.seq]
    assert len({e.seq for e in events}) == 6
    assert {e.priority for e in events} == {5}  # all still emergency priority
    assert events[0].data == {"message": "Fire in the kitchen", "location": "reception_hall"}
    for n, event in enumerate(events[1:5], start=1):
        assert event.data == {
            "message": f"Still burning ({n})",
            "location": "reception_hall",
            "emergency": fire.pk,
            "alert_seq": first.seq,
            "repeat": n,
        }
    assert events[5].data == {"message": "A guest fainted", "location": "reception_hall"}


@pytest.mark.django_db
def test_after_the_resolution_the_next_alarm_opens_a_new_emergency(party: WeddingParty) -> None:
    alarm(party.carmen)
    alarm(party.carmen)
    resolve_all(party)
    again = alarm(party.carmen, "Fire again")
    assert Emergency.objects.filter(raised_by=party.carmen).count() == 2
    newest = Emergency.objects.get(raised_by=party.carmen, resolved_at__isnull=True)
    assert (newest.raised_event_id, newest.repeats) == (again.id, 0)
    assert "repeat" not in Event.objects.get(pk=again.id).data


@pytest.mark.django_db(transaction=True)
def test_a_flood_from_two_members_at_once_opens_one_emergency_each() -> None:
    party = make_wedding_party()
    senders = itertools.cycle([party.carmen.pk, party.victor.pk])
    per_thread = 10

    def flood() -> list[int]:
        member = Member.objects.get(pk=next(senders))
        return [alarm(member, f"help {i}").seq for i in range(per_thread)]

    results = race(flood, threads=6)
    seqs = sorted(seq for result in results if isinstance(result, list) for seq in result)
    total = 6 * per_thread
    assert seqs == list(range(1, total + 1))  # every alarm stored, gap-free, none twice
    emergencies = list(Emergency.objects.all())
    assert len(emergencies) == 2
    assert {e.raised_by_id for e in emergencies} == {party.carmen.pk, party.victor.pk}
    assert sum(e.repeats for e in emergencies) == total - 2
    for emergency in emergencies:
        sent = Event.objects.filter(type="emergency.alert", sender_member_id=emergency.raised_by_id)
        assert sent.count() == emergency.repeats + 1
        repeats = sorted(e.data["repeat"] for e in sent if "repeat" in e.data)
        assert repeats == list(range(1, emergency.repeats + 1))  # counted under the lock: no number twice
        assert {e.data["emergency"] for e in sent if "repeat" in e.data} == {emergency.pk}


@pytest.mark.django_db
def test_repeats_are_neither_escalated_nor_re_sent(party: WeddingParty) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        fire = alarm(party.carmen)
        for _ in range(5):
            alarm(party.carmen)
        faint = alarm(party.victor, "A guest fainted")
        alarm(party.victor, "Still down")
        clock.move_to(T0 + 2 * MINUTE)
        pending = unacknowledged_events(
            wedding_ids=[party.wedding.pk], newer_than=T0 - MINUTE, older_than=timezone.now()
        )
        assert sorted(event.seq for event in pending) == [fire.seq, faint.seq]
        clock.move_to(T0 + dt.timedelta(seconds=settings.WEDSYNC_ESCALATION_AFTER_SECONDS + 1))
        escalated = escalations_create_due()
    assert sorted(str(e.event_id) for e in escalated) == sorted([str(fire.id), str(faint.id)])
    assert Escalation.objects.count() == 2


@pytest.mark.django_db
@override_settings(PRESENCE_EMERGENCY_NEW_PER_MEMBER=2, PRESENCE_EMERGENCY_NEW_WINDOW_SECONDS=600)
def test_new_emergencies_are_capped_per_member_and_window_and_refusals_audited(party: WeddingParty) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        alarm(party.carmen)
        resolve_all(party)
        clock.move_to(T0 + MINUTE)
        second = alarm(party.carmen)
        # At the cap with one open: a repeat is an update, never refused.
        repeat = alarm(party.carmen, "Still burning")
        assert Event.objects.get(pk=repeat.id).data["alert_seq"] == second.seq
        resolve_all(party)
        clock.move_to(T0 + 2 * MINUTE)
        with pytest.raises(PublishRefused) as refused:
            alarm(party.carmen, "Third fire")
        assert refused.value.code == "rate_limited"
        assert refused.value.retry_after == pytest.approx(8 * 60)  # the first leaves the window at T0 + 10 min
        # Nothing of the refused alarm was kept; another member is not held by carmen's cap.
        assert not Event.objects.filter(data__message="Third fire").exists()
        alarm(party.victor, "A guest fainted")
        (entry,) = AuditLog.objects.filter(action="presence.emergency.refuse")
        assert (entry.actor_id, entry.wedding_id, entry.outcome) == (party.carmen.user_id, party.wedding.pk, "refused")
        assert entry.details == {
            "op": "open",
            "reason": "rate_limited",
            "member": party.carmen.pk,
            "role": "caterer",
            "limit": 2,
            "window_seconds": 600,
            "retry_after": 480.0,
        }
        clock.move_to(T0 + 10 * MINUTE + dt.timedelta(seconds=1))
        third = alarm(party.carmen, "Third fire")
    assert Emergency.objects.get(raised_event_id=third.id).raised_by_id == party.carmen.pk
    assert Emergency.objects.filter(raised_by=party.carmen).count() == 3


@pytest.mark.django_db
@override_settings(PRESENCE_EMERGENCY_NEW_PER_MEMBER=1)
def test_a_retried_alarm_is_answered_with_what_it_stored_even_past_the_cap(party: WeddingParty) -> None:
    first = alarm(party.carmen, idempotency_key="button-1")
    resolve_all(party)
    retried = alarm(party.carmen, idempotency_key="button-1")
    assert (retried.duplicate, retried.id, retried.seq) == (True, first.id, first.seq)
    with pytest.raises(PublishRefused):
        alarm(party.carmen, idempotency_key="button-2")
