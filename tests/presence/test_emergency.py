"""Emergency mode against the real database and Redis: an ``emergency.alert`` opens an emergency in
its own transaction, a planner resolves it, and what it widens (vendors' audiences, guests'
locations, the re-notification pace) is widened only while it is open."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import time_machine
from django.db import connection, transaction

from presence.emergency.selectors import STAFF_NAME, emergencies_open_ids
from presence.emergency.services import EmergencyRefused, emergency_resolve
from presence.models import Alert, Emergency
from presence.selectors import wedding_emergency_open
from presence.services import PresenceRefused, presence_device_join, presence_state_set
from presence.state import StateChange
from realtime.models import Event, WeddingStream
from realtime.names import Priority
from realtime.services.events import PublishedEvent, PublishRefused, member_event_publish
from tests.concurrency import race
from tests.factories import device_presence
from tests.personas import WeddingParty, make_coordinator, make_wedding_party
from tests.presence.test_alerts import CEREMONY, all_there_but, sync, wedding_day_party
from wedsync.models import AuditLog, Member
from wedsync.permissions import Role

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres]

EVERY_ROLE = sorted(role.value for role in Role)


def raise_alarm(member: Member, message: str = "Fire in the kitchen", **kwargs) -> PublishedEvent:
    return member_event_publish(
        member=member,
        type_name="emergency.alert",
        data={"message": message, "location": "reception_hall"},
        **kwargs,
    )


def vendor_status(member: Member, to: list[str]) -> Event:
    published = member_event_publish(member=member, type_name="vendor.status", data={"activity": "setup"}, to=to)
    return Event.objects.get(pk=published.id)


def resolve(party: WeddingParty, emergency: Emergency, member: Member | None = None) -> Emergency:
    who = (member or party.priya).user
    return emergency_resolve(wedding_id=party.wedding.pk, emergency_id=emergency.pk, user=who)


def staff_user(party: WeddingParty):
    """A coordinator of the party's wedding's agency."""
    return make_coordinator(party.wedding)


# --- Opening --------------------------------------------------------------------------------------------


def test_an_emergency_alert_opens_an_emergency_with_its_event(party: WeddingParty) -> None:
    assert not wedding_emergency_open(wedding_id=party.wedding.pk)
    published = raise_alarm(party.carmen)
    emergency = Emergency.objects.get()
    assert (emergency.wedding_id, emergency.raised_event_id, emergency.raised_by_id, emergency.resolved_at) == (
        party.wedding.pk,
        published.id,
        party.carmen.pk,
        None,
    )
    assert wedding_emergency_open(wedding_id=party.wedding.pk)


def test_other_events_and_refused_alerts_open_nothing(party: WeddingParty) -> None:
    member_event_publish(member=party.carmen, type_name="chat.message", data={"text": "smoke?"})
    with pytest.raises(PublishRefused):
        raise_alarm(party.gil)  # guests may not send emergencies
    with pytest.raises(PublishRefused):
        member_event_publish(member=party.carmen, type_name="emergency.alert", data={})  # no message
    assert not Emergency.objects.exists()


def test_a_retried_alert_opens_one_emergency(party: WeddingParty) -> None:
    first = raise_alarm(party.carmen, idempotency_key="alarm-1")
    again = raise_alarm(party.carmen, idempotency_key="alarm-1")
    assert (again.duplicate, again.id) == (True, first.id)
    assert Emergency.objects.count() == 1


def test_a_second_alert_while_one_is_open_opens_its_own(party: WeddingParty) -> None:
    fire = raise_alarm(party.carmen)
    faint = raise_alarm(party.victor, "A guest fainted")
    emergencies = {e.raised_event_id: e for e in Emergency.objects.all()}
    assert set(emergencies) == {fire.id, faint.id}
    # Resolving one leaves the wedding in emergency mode until the other is resolved too.
    resolve(party, emergencies[fire.id])
    assert emergencies_open_ids(wedding_id=party.wedding.pk) == [emergencies[faint.id].pk]
    resolve(party, emergencies[faint.id])
    assert not wedding_emergency_open(wedding_id=party.wedding.pk)


def test_a_publish_that_fails_afterwards_keeps_neither_event_nor_emergency(party: WeddingParty) -> None:
    class Later(Exception):
        pass

    def alarm_then_fail() -> None:
        with transaction.atomic():
            raise_alarm(party.carmen)
            assert Emergency.objects.count() == 1  # written in the caller's transaction, not after it
            raise Later

    with pytest.raises(Later):
        alarm_then_fail()
    assert not Emergency.objects.exists()
    assert not Event.objects.exists()


def test_an_emergency_that_cannot_be_stored_takes_its_alert_with_it(party: WeddingParty) -> None:
    # A real failure inside the database, after the event was stored: the emergency's INSERT is refused.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_emergency() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$"
            " LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_emergency BEFORE INSERT ON presence_emergency"
            " FOR EACH ROW EXECUTE FUNCTION refuse_emergency()"
        )
    member_event_publish(member=party.carmen, type_name="chat.message", data={"text": "before"})
    # No atomic block of the test's own: only the publish's transaction can undo the stored event
    # (and keep the test's transaction usable).
    with pytest.raises(Exception, match="refused"):
        raise_alarm(party.carmen)
    assert list(Event.objects.values_list("type", flat=True)) == ["chat.message"]
    assert WeddingStream.objects.get(wedding=party.wedding).last_seq == 1  # the alarm's seq was not kept


# --- Resolving ------------------------------------------------------------------------------------------


def test_the_planner_resolves_and_everyone_is_told(party: WeddingParty) -> None:
    alarm = raise_alarm(party.carmen)
    emergency = Emergency.objects.get()
    resolved = resolve(party, emergency)
    assert resolved.resolved_by == party.priya.user
    assert resolved.resolved_at is not None
    assert not wedding_emergency_open(wedding_id=party.wedding.pk)
    event = Event.objects.get(type="emergency.resolved")
    assert event.seq == alarm.seq + 1
    assert (event.priority, event.sender, event.sender_member_id) == (Priority.CRITICAL, {}, None)
    assert event.audience_roles == EVERY_ROLE
    assert event.data == {
        "emergency": emergency.pk,
        "alert_seq": alarm.seq,
        "message": "Fire in the kitchen",
        "resolved_at": event.data["resolved_at"],
        "resolved_by": {"member": party.priya.pk, "role": "planner", "name": party.priya.name},
        "emergency_mode": False,
        "open": [],
    }
    entry = AuditLog.objects.get(action="presence.emergency.resolve")
    assert (entry.outcome, entry.actor_id, entry.wedding_id, entry.target) == (
        "success",
        party.priya.user_id,
        party.wedding.pk,
        f"emergency:{emergency.pk}",
    )
    assert entry.details["seq"] == event.seq


def test_resolving_twice_keeps_the_first_and_tells_once(party: WeddingParty) -> None:
    raise_alarm(party.carmen)
    emergency = Emergency.objects.get()
    first = resolve(party, emergency)
    staff = staff_user(party)
    again = emergency_resolve(wedding_id=party.wedding.pk, emergency_id=emergency.pk, user=staff)
    assert (again.resolved_by, again.resolved_at) == (first.resolved_by, first.resolved_at)
    assert Event.objects.filter(type="emergency.resolved").count() == 1
    assert AuditLog.objects.filter(action="presence.emergency.resolve").count() == 1


def test_staff_resolve_as_staff(party: WeddingParty) -> None:
    raise_alarm(party.carmen)
    emergency = Emergency.objects.get()
    emergency_resolve(wedding_id=party.wedding.pk, emergency_id=emergency.pk, user=staff_user(party))
    event = Event.objects.get(type="emergency.resolved")
    assert event.data["resolved_by"] == {"member": None, "role": "staff", "name": STAFF_NAME}


@pytest.mark.parametrize("who", ["ana", "carmen", "victor", "gil"])
def test_the_couple_vendors_and_guests_may_not_resolve(party: WeddingParty, who: str) -> None:
    raise_alarm(party.carmen)
    emergency = Emergency.objects.get()
    member: Member = getattr(party, who)
    with pytest.raises(EmergencyRefused) as refused:
        resolve(party, emergency, member)
    assert refused.value.code == "forbidden"
    entry = AuditLog.objects.get(action="presence.emergency.refuse")
    assert (entry.outcome, entry.actor_id, entry.wedding_id, entry.details["op"]) == (
        "refused",
        member.user_id,
        party.wedding.pk,
        "resolve",
    )
    assert wedding_emergency_open(wedding_id=party.wedding.pk)
    assert not Event.objects.filter(type="emergency.resolved").exists()


def test_an_inactive_planner_or_another_weddings_planner_may_not_resolve(party: WeddingParty) -> None:
    raise_alarm(party.carmen)
    emergency = Emergency.objects.get()
    other = make_wedding_party()
    with pytest.raises(EmergencyRefused) as refused:
        resolve(party, emergency, other.priya)
    assert refused.value.code == "forbidden"
    # Their own wedding's id does not reach this wedding's emergency either.
    with pytest.raises(EmergencyRefused) as missing:
        emergency_resolve(wedding_id=other.wedding.pk, emergency_id=emergency.pk, user=other.priya.user)
    assert missing.value.code == "not_found"
    Member.objects.filter(pk=party.priya.pk).update(is_active=False)
    with pytest.raises(EmergencyRefused):
        resolve(party, emergency)
    assert Emergency.objects.get().resolved_at is None


# --- What emergency mode widens ---------------------------------------------------------------------------


def test_a_vendor_widens_its_audience_only_while_an_emergency_is_open(party: WeddingParty) -> None:
    to = ["role:guest", "role:caterer", f"member:{party.paula.pk}"]
    before = vendor_status(party.carmen, to)
    # Outside emergency mode `to` only narrows: nobody it names is beyond couple + planner.
    assert (before.audience_roles, before.audience_members) == ([], [party.carmen.pk])
    assert not AuditLog.objects.filter(action="presence.emergency.publish").exists()

    raise_alarm(party.victor)
    emergency = Emergency.objects.get()
    during = vendor_status(party.carmen, to)
    assert (during.audience_roles, during.audience_members) == (
        ["caterer", "guest"],
        sorted([party.carmen.pk, party.paula.pk]),
    )
    entry = AuditLog.objects.get(action="presence.emergency.publish")
    assert (entry.outcome, entry.actor_id, entry.wedding_id, entry.target) == (
        "success",
        party.carmen.user_id,
        party.wedding.pk,
        f"event:{during.seq}",
    )
    assert entry.details["emergencies"] == [emergency.pk]
    assert (entry.details["type"], entry.details["default_roles"]) == ("vendor.status", ["couple", "planner"])

    resolve(party, emergency)
    after = vendor_status(party.carmen, to)
    assert (after.audience_roles, after.audience_members) == ([], [party.carmen.pk])
    assert AuditLog.objects.filter(action="presence.emergency.publish").count() == 1


def test_a_vendor_reaching_only_its_default_audience_is_not_a_widened_use(party: WeddingParty) -> None:
    raise_alarm(party.victor)
    event = vendor_status(party.carmen, ["role:planner"])
    assert (event.audience_roles, event.audience_members) == (["planner"], [party.carmen.pk])
    without_to = Event.objects.get(
        pk=member_event_publish(member=party.carmen, type_name="vendor.status", data={"activity": "working"}).id
    )
    assert without_to.audience_roles == ["couple", "planner"]  # no `to`: the default, not everyone
    assert not AuditLog.objects.filter(action="presence.emergency.publish").exists()


def test_only_vendors_widen(party: WeddingParty) -> None:
    raise_alarm(party.victor)
    # The couple may publish vendor.status too (about anyone), but is no vendor: `to` only narrows.
    couple = Event.objects.get(
        pk=member_event_publish(
            member=party.ana, type_name="vendor.status", data={"activity": "setup"}, to=["role:caterer"]
        ).id
    )
    assert (couple.audience_roles, couple.audience_members) == ([], [party.ana.pk])
    assert not AuditLog.objects.filter(action="presence.emergency.publish").exists()


def test_a_vendor_naming_someone_of_another_wedding_is_still_invalid(party: WeddingParty) -> None:
    raise_alarm(party.victor)
    stranger = make_wedding_party().gil
    with pytest.raises(PublishRefused) as refused:
        vendor_status(party.carmen, [f"member:{stranger.pk}"])
    assert refused.value.code == "invalid"
    assert not AuditLog.objects.filter(action="presence.emergency.publish").exists()


@pytest.mark.requires_redis
def test_a_guest_shares_a_location_during_an_emergency_and_not_after(party: WeddingParty) -> None:
    device = device_presence(party.gil, device="gil-phone")
    presence_device_join(device=device)

    def share() -> None:
        presence_state_set(
            wedding_id=party.wedding.pk,
            member_id=party.gil.pk,
            role=party.gil.role,
            user_id=party.gil.user_id,
            device="gil-phone",
            state=StateChange(location="parking"),
        )

    with pytest.raises(PresenceRefused):
        share()
    raise_alarm(party.carmen)
    share()
    assert AuditLog.objects.filter(action="presence.emergency.location", outcome="success").count() == 1
    resolve(party, Emergency.objects.get())
    with pytest.raises(PresenceRefused) as refused:
        share()
    assert refused.value.code == "forbidden"
    assert AuditLog.objects.filter(action="presence.refuse").count() == 2


def test_resolving_puts_re_notification_back_to_every_half_hour() -> None:
    day = wedding_day_party()
    start = CEREMONY.replace(hour=8)
    devices = all_there_but(day, day.victor)  # the venue contact is offline: one open alert
    sync(day, devices, start)
    assert Alert.objects.filter(resolved_at__isnull=True).count() == 1
    with time_machine.travel(start, tick=False):
        raise_alarm(day.carmen)
    assert sync(day, devices, start + dt.timedelta(minutes=5)).renotified == 1
    with time_machine.travel(start + dt.timedelta(minutes=6), tick=False):
        resolve(day, Emergency.objects.get())
    assert sync(day, devices, start + dt.timedelta(minutes=10)).renotified == 0  # it would be, at the 5-minute pace
    assert sync(day, devices, start + dt.timedelta(minutes=34)).renotified == 0
    assert sync(day, devices, start + dt.timedelta(minutes=35)).renotified == 1  # 30 minutes after the last


def test_members_may_not_publish_the_all_clear(party: WeddingParty) -> None:
    raise_alarm(party.carmen)
    with pytest.raises(PublishRefused) as refused:
        member_event_publish(member=party.priya, type_name="emergency.resolved", data={})
    assert refused.value.code == "forbidden"
    assert wedding_emergency_open(wedding_id=party.wedding.pk)


# --- Races ------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_planners_resolving_at_once_tell_everyone_once() -> None:
    party = make_wedding_party()
    raise_alarm(party.carmen)
    emergency = Emergency.objects.get()
    second_planner = make_wedding_party().priya
    Member.objects.filter(pk=second_planner.pk).update(wedding=party.wedding)
    users = iter([party.priya.user, second_planner.user])
    pick = threading.Lock()

    def work() -> Emergency:
        with pick:
            user = next(users)
        return emergency_resolve(wedding_id=party.wedding.pk, emergency_id=emergency.pk, user=user)

    results = race(work, threads=2)
    assert len({r.resolved_by_id for r in results if isinstance(r, Emergency)}) == 1  # both see the first
    assert Event.objects.filter(type="emergency.resolved").count() == 1
    assert AuditLog.objects.filter(action="presence.emergency.resolve").count() == 1


@pytest.mark.django_db(transaction=True)
def test_widened_publishes_racing_the_resolution_are_all_stored_before_it() -> None:
    party = make_wedding_party()
    for attempt in range(3):  # the race is real: run it a few times
        alarm = raise_alarm(party.victor)
        emergency = Emergency.objects.get(resolved_at__isnull=True)
        jobs = iter(["resolve", "publish", "publish", "publish"])
        pick = threading.Lock()

        def work(emergency: Emergency = emergency, jobs=jobs, pick=pick) -> list[int]:
            with pick:
                job = next(jobs)
            if job == "resolve":
                time.sleep(0.005)  # let the publishers get going first
                resolve(party, emergency)
                return []
            return [vendor_status(party.carmen, ["role:guest"]).seq for _ in range(8)]

        race(work, threads=4)
        resolved_seq = Event.objects.get(type="emergency.resolved", data__emergency=emergency.pk).seq
        statuses = Event.objects.filter(type="vendor.status", seq__gt=alarm.seq)
        widened = {event.seq for event in statuses if "guest" in event.audience_roles}
        # Before the all-clear every status was widened; after it none is.
        assert widened == {event.seq for event in statuses if event.seq < resolved_seq}, attempt
        entries = AuditLog.objects.filter(action="presence.emergency.publish", details__emergencies=[emergency.pk])
        assert set(entries.values_list("details__seq", flat=True)) == widened, attempt
