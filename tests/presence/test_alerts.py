"""Raising, escalating, resolving and re-notifying alerts against the real database: each change is
one stored alert and one event, however many beat workers run the rules at once."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from presence.alerts.rules import AlertRules
from presence.alerts.selectors import alert_weddings_due
from presence.alerts.services import AlertCounts, alerts_evaluate, wedding_alerts_sync
from presence.attendance import wedding_plan
from presence.models import Alert, AlertKind, AlertSeverity, Emergency
from presence.state import DevicePresence
from realtime.models import Event
from realtime.names import EventType
from realtime.services.acks import event_ack
from realtime.services.events import event_publish
from tests.concurrency import race
from tests.factories import AlertFactory, device_presence
from tests.personas import WeddingParty, make_wedding_party
from wedsync.models import AuditLog, Member, WeddingStatus

pytestmark = [pytest.mark.requires_postgres]

LISBON = zoneinfo.ZoneInfo("Europe/Lisbon")
CEREMONY = dt.datetime(2026, 6, 13, 16, 0, tzinfo=LISBON)


def wedding_day_party(*, ceremony: dt.datetime = CEREMONY, **fields) -> WeddingParty:
    return make_wedding_party(date=ceremony.date(), ceremony_at=ceremony, time_zone=str(ceremony.tzinfo), **fields)


@pytest.fixture
def day(db: None) -> WeddingParty:
    return wedding_day_party()


def at_venue(*members: Member, **fields) -> list[DevicePresence]:
    return [device_presence(member, location="ceremony_area", **fields) for member in members]


def all_there_but(party: WeddingParty, *missing: Member) -> list[DevicePresence]:
    present = [party.ana, party.ben, party.priya, party.paula, party.olu, party.victor]
    return at_venue(*(member for member in present if member not in missing))


def raced(work: Callable[[], AlertCounts]) -> list[AlertCounts]:
    results = race(work, threads=2)
    return [result for result in results if isinstance(result, AlertCounts)]


def sync(party: WeddingParty, devices: list[DevicePresence], now: dt.datetime) -> AlertCounts:
    plan = wedding_plan(wedding_id=party.wedding.pk)
    assert plan is not None
    with time_machine.travel(now, tick=False):
        return wedding_alerts_sync(plan=plan, devices=devices, now=now, rules=AlertRules.from_settings())


def alert_events(party: WeddingParty, *types: EventType) -> list[Event]:
    wanted = [t.value for t in types or (EventType.ALERT_RAISED, EventType.ALERT_RESOLVED)]
    return list(Event.objects.filter(wedding=party.wedding, type__in=wanted).order_by("seq"))


def before(minutes: int) -> dt.datetime:
    return CEREMONY - dt.timedelta(minutes=minutes)


# --- Raising and escalating ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_missing_photographer_is_one_alert_escalated_at_each_step(day: WeddingParty) -> None:
    devices = all_there_but(day, day.paula)
    assert sync(day, devices, before(61)) == AlertCounts()
    assert sync(day, devices, before(60)).raised == 1
    assert sync(day, devices, before(45)) == AlertCounts()  # still info: nothing new to tell
    assert sync(day, devices, before(30)).escalated == 1
    assert sync(day, devices, before(15)).escalated == 1
    assert sync(day, devices, before(10)) == AlertCounts()

    alert = Alert.objects.get()
    assert (alert.kind, alert.severity, alert.member_id, alert.device) == (
        AlertKind.KEY_PERSON_MISSING,
        AlertSeverity.CRITICAL,
        day.paula.pk,
        "",
    )
    events = alert_events(day)
    assert [(e.data["severity"], e.data["notice"]) for e in events] == [
        ("info", "raised"),
        ("warning", "escalated"),
        ("critical", "escalated"),
    ]
    # raised_at and raised_event name the notice that made it critical (the escalation webhook's clock).
    assert alert.raised_at == before(15)
    assert alert.raised_event_id == events[-1].id
    first = events[0]
    assert first.priority == 4  # critical, whatever the alert's own severity
    assert (first.audience_roles, first.audience_members) == (["couple", "planner"], [day.paula.pk])
    assert first.data == {
        "alert": alert.pk,
        "kind": "key_person_missing",
        "severity": "info",
        "member": day.paula.pk,
        "role": "photographer",
        "device": None,
        "message": f"{day.paula.name} (photographer) is not online, 60 min before the ceremony.",
        "raised_at": "2026-06-13T14:00:00.000Z",
        "notice": "raised",
    }


@pytest.mark.django_db
@pytest.mark.parametrize("minutes_before", [60, 30, 15])
def test_nothing_is_raised_when_everyone_is_there(day: WeddingParty, minutes_before: int) -> None:
    assert sync(day, all_there_but(day), before(minutes_before)) == AlertCounts()
    assert not Alert.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("minutes_before", "severity"), [(60, "info"), (30, "warning"), (15, "critical")])
def test_a_key_person_first_missed_late_starts_at_that_steps_severity(
    day: WeddingParty, minutes_before: int, severity: str
) -> None:
    sync(day, all_there_but(day, day.olu), before(minutes_before))
    assert list(Alert.objects.values_list("member_id", "severity")) == [(day.olu.pk, severity)]


@pytest.mark.django_db
def test_escalation_asks_for_a_new_acknowledgement(day: WeddingParty) -> None:
    devices = all_there_but(day, day.paula)
    sync(day, devices, before(40))
    Alert.objects.update(acknowledged_at=before(39), acknowledged_by=day.priya.user)
    sync(day, devices, before(30))
    alert = Alert.objects.get()
    assert (alert.severity, alert.acknowledged_at, alert.acknowledged_by) == ("warning", None, None)


# --- Resolving -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_alert_resolves_itself_when_the_person_arrives(day: WeddingParty) -> None:
    sync(day, all_there_but(day, day.paula), before(20))
    assert sync(day, all_there_but(day), before(18)).resolved == 1
    alert = Alert.objects.get()
    assert alert.resolved_at == before(18)
    resolved = alert_events(day, EventType.ALERT_RESOLVED)
    assert len(resolved) == 1
    assert (resolved[0].audience_roles, resolved[0].audience_members) == (["couple", "planner"], [day.paula.pk])
    assert resolved[0].data == {
        "alert": alert.pk,
        "kind": "key_person_missing",
        "severity": "warning",
        "member": day.paula.pk,
        "role": "photographer",
        "device": None,
        "message": f"{day.paula.name} (photographer) is at the venue.",
        "resolved_at": "2026-06-13T14:42:00.000Z",
        "reason": "cleared",
    }
    # Missing again later: a new alert, the old one stays closed.
    sync(day, all_there_but(day, day.paula), before(10))
    assert list(Alert.objects.order_by("id").values_list("severity", "resolved_at")) == [
        ("warning", before(18)),
        ("critical", None),
    ]


@pytest.mark.django_db
def test_the_venue_contacts_alert_ends_with_the_wedding_day(day: WeddingParty) -> None:
    morning = CEREMONY.replace(hour=9)
    sync(day, all_there_but(day, day.victor), morning)
    assert list(Alert.objects.values_list("kind", "member_id", "severity")) == [
        ("venue_contact_offline", day.victor.pk, "warning")
    ]
    sync(day, all_there_but(day, day.victor), CEREMONY.replace(hour=23, minute=59))
    assert Alert.objects.get().resolved_at is None
    after_midnight = dt.datetime(2026, 6, 14, 0, 1, tzinfo=LISBON)
    with time_machine.travel(after_midnight, tick=False):
        counts = alerts_evaluate(now=after_midnight, devices_of=lambda wedding_id: [])
    assert counts.resolved == 1
    assert alert_events(day, EventType.ALERT_RESOLVED)[0].data["reason"] == "ended"


@pytest.mark.django_db
def test_a_cancelled_weddings_alerts_resolve(day: WeddingParty) -> None:
    sync(day, all_there_but(day, day.paula), before(20))
    day.wedding.status = WeddingStatus.CANCELLED
    day.wedding.save()
    assert sync(day, [], before(19)).resolved == 1
    assert not Alert.objects.filter(resolved_at__isnull=True).exists()


# --- Low battery -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_low_battery_is_told_at_most_once_per_device_per_hour(day: WeddingParty) -> None:
    morning = CEREMONY.replace(hour=10)
    others = all_there_but(day, day.carmen)

    def carmen(*, socket: str = "s1", battery: int = 14, charging: bool = False) -> list[DevicePresence]:
        phone = device_presence(
            day.carmen, device=socket, client_device="carmens-phone", battery=battery, charging=charging
        )
        return [*others, phone]

    assert sync(day, carmen(), morning).raised == 1
    assert sync(day, carmen(charging=True), morning + dt.timedelta(minutes=5)).resolved == 1
    # The battery wavers around the line for the rest of the hour: nobody is told again...
    for minute in (10, 20, 59):
        assert sync(day, carmen(battery=13), morning + dt.timedelta(minutes=minute)).raised == 0
    # ... not even when the phone reconnects on a new socket: the device is its own name, not the socket's.
    assert sync(day, carmen(socket="s2", battery=12), morning + dt.timedelta(minutes=30)).raised == 0
    assert sync(day, carmen(socket="s2", battery=11), morning + dt.timedelta(minutes=60)).raised == 1
    assert (
        list(Alert.objects.order_by("id").values_list("kind", "device", "member_id"))
        == [("low_battery", "carmens-phone", day.carmen.pk)] * 2
    )
    assert [e.type for e in alert_events(day)] == ["alert.raised", "alert.resolved", "alert.raised"]


@pytest.mark.django_db
def test_each_device_of_a_member_has_its_own_low_battery_alert(day: WeddingParty) -> None:
    devices = [
        *all_there_but(day),
        device_presence(day.paula, device="a", client_device="phone", battery=10, charging=False),
        device_presence(day.paula, device="b", client_device="camera-tablet", battery=8, charging=False),
    ]
    assert sync(day, devices, CEREMONY.replace(hour=10)).raised == 2
    # The tablet goes offline: its alert ends, the phone's stays.
    assert sync(day, devices[:-1], CEREMONY.replace(hour=10, minute=1)).resolved == 1
    assert list(Alert.objects.filter(resolved_at__isnull=True).values_list("device", flat=True)) == ["phone"]


# --- Re-notifying ---------------------------------------------------------------------------------------------


def _repeats(party: WeddingParty) -> int:
    return sum(e.data.get("notice") == "repeated" for e in alert_events(party, EventType.ALERT_RAISED))


@pytest.mark.django_db
def test_open_alerts_are_told_again_every_half_hour_until_acknowledged(day: WeddingParty) -> None:
    start = CEREMONY.replace(hour=8)
    devices = all_there_but(day, day.victor)
    sync(day, devices, start)
    assert sync(day, devices, start + dt.timedelta(minutes=29)).renotified == 0
    assert sync(day, devices, start + dt.timedelta(minutes=30)).renotified == 1
    assert sync(day, devices, start + dt.timedelta(minutes=45)).renotified == 0
    assert sync(day, devices, start + dt.timedelta(minutes=60)).renotified == 1
    Alert.objects.update(acknowledged_at=start + dt.timedelta(minutes=61))
    assert sync(day, devices, start + dt.timedelta(minutes=120)).renotified == 0
    repeat = alert_events(day, EventType.ALERT_RAISED)[-1]
    assert (repeat.data["notice"], repeat.data["alert"], repeat.priority) == ("repeated", Alert.objects.get().pk, 4)
    assert _repeats(day) == 2


@pytest.mark.django_db
def test_in_an_emergency_open_alerts_are_told_again_every_five_minutes(day: WeddingParty) -> None:
    start = CEREMONY.replace(hour=8)
    devices = all_there_but(day, day.victor)
    sync(day, devices, start)
    with time_machine.travel(start, tick=False):
        fire = event_publish(wedding_id=day.wedding.pk, event_type=EventType.EMERGENCY_ALERT, data={"message": "fire"})
    emergency = Emergency.objects.create(wedding=day.wedding, raised_event_id=fire.id, raised_by=day.victor)
    assert sync(day, devices, start + dt.timedelta(minutes=4)).renotified == 0
    assert sync(day, devices, start + dt.timedelta(minutes=5)).renotified == 1
    assert sync(day, devices, start + dt.timedelta(minutes=10)).renotified == 1
    emergency.resolved_at = start + dt.timedelta(minutes=11)
    emergency.save()
    assert sync(day, devices, start + dt.timedelta(minutes=15)).renotified == 0  # back to every 30 minutes
    assert sync(day, devices, start + dt.timedelta(minutes=40)).renotified == 1
    assert _repeats(day) == 3


# --- Several workers at once ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_running_the_rules_at_once_raise_one_alert_and_one_event() -> None:
    party = wedding_day_party()
    devices = all_there_but(party, party.paula)
    for attempt in range(5):  # the race is real: run it a few times
        Alert.objects.all().delete()
        results = raced(lambda: sync(party, devices, before(25)))
        assert sorted(r.raised for r in results) == [0, 1], attempt
        assert Alert.objects.count() == 1
        alert = Alert.objects.get()
        raised = [e for e in alert_events(party, EventType.ALERT_RAISED) if e.data["alert"] == alert.pk]
        assert len(raised) == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_escalating_and_resolving_at_once_tell_each_change_once() -> None:
    party = wedding_day_party()
    sync(party, all_there_but(party, party.paula), before(25))
    results = raced(lambda: sync(party, all_there_but(party, party.paula), before(14)))
    assert sorted(r.escalated for r in results) == [0, 1]
    results = raced(lambda: sync(party, all_there_but(party), before(12)))
    assert sorted(r.resolved for r in results) == [0, 1]
    assert [(e.type, e.data["severity"]) for e in alert_events(party)] == [
        ("alert.raised", "warning"),
        ("alert.raised", "critical"),
        ("alert.resolved", "critical"),
    ]


# --- Which weddings the beat task looks at ----------------------------------------------------------------------


@pytest.mark.django_db
def test_only_weddings_of_the_day_near_their_ceremony_or_with_open_alerts_are_evaluated() -> None:
    now = dt.datetime(2026, 6, 13, 10, 30, tzinfo=dt.UTC)  # 11:30 in Lisbon, 00:30 in Honolulu

    def wedding(time_zone: str, day: int, at: dt.time) -> int:
        ceremony = dt.datetime.combine(dt.date(2026, 6, day), at, tzinfo=zoneinfo.ZoneInfo(time_zone))
        return wedding_day_party(ceremony=ceremony).wedding.pk

    today_in_lisbon = wedding("Europe/Lisbon", 13, dt.time(16, 0))
    today_in_los_angeles = wedding("America/Los_Angeles", 13, dt.time(16, 0))  # 03:30 there
    tomorrow_in_los_angeles = wedding("America/Los_Angeles", 14, dt.time(16, 0))
    # Yesterday in Honolulu, but its ceremony began 40 minutes ago: still watched.
    late_in_honolulu = wedding("Pacific/Honolulu", 12, dt.time(23, 50))
    yesterday_in_auckland = wedding("Pacific/Auckland", 12, dt.time(16, 0))
    next_month = (
        wedding("Europe/Lisbon", 13, dt.time(16, 0))
        and wedding_day_party(ceremony=CEREMONY + dt.timedelta(days=30)).wedding.pk
    )
    last_week = wedding_day_party(ceremony=CEREMONY - dt.timedelta(days=7)).wedding
    AlertFactory(wedding=last_week)  # still open: looked at until it resolves

    due = set(alert_weddings_due(now=now, rules=AlertRules.from_settings()))
    assert {today_in_lisbon, today_in_los_angeles, late_in_honolulu, last_week.pk} <= due
    assert not due & {tomorrow_in_los_angeles, yesterday_in_auckland, next_month}


@pytest.mark.django_db
def test_the_task_reads_a_fixed_number_of_queries_whatever_the_number_of_quiet_weddings() -> None:
    now = CEREMONY.replace(hour=9)

    def queries_with(weddings: int) -> int:
        for _ in range(weddings):
            wedding_day_party()
        venue_contacts = {member.wedding_id: member for member in Member.objects.filter(role="venue")}
        with CaptureQueriesContext(connection) as captured, time_machine.travel(now, tick=False):
            counts = alerts_evaluate(
                now=now, devices_of=lambda wedding_id: [device_presence(venue_contacts[wedding_id], battery=90)]
            )
        assert counts == AlertCounts()
        return len(captured)

    assert queries_with(1) == queries_with(3)


# --- Acknowledging through the ack op ------------------------------------------------------------------------


@pytest.mark.django_db
def test_only_a_planners_ack_of_the_current_notice_acknowledges_the_alert(day: WeddingParty) -> None:
    devices = all_there_but(day, day.paula)
    sync(day, devices, before(40))
    sync(day, devices, before(30))
    info, warning = alert_events(day, EventType.ALERT_RAISED)

    def ack(member: Member, event: Event) -> None:
        assert event_ack(user_id=member.user_id, wedding_id=day.wedding.pk, seq=event.seq)

    ack(day.paula, warning)  # the member concerned confirms receipt: not an acknowledgement
    ack(day.ana, warning)  # the couple acknowledges over the API or the admin, not with the op
    ack(day.priya, info)  # a notice the escalation replaced
    assert Alert.objects.get().acknowledged_at is None
    ack(day.priya, warning)
    alert = Alert.objects.get()
    assert (alert.acknowledged_by, alert.acknowledged_at is not None) == (day.priya.user, True)
    entry = AuditLog.objects.get(action="presence.alert.ack")
    assert (entry.actor_id, entry.details["via"], entry.details["seq"]) == (day.priya.user_id, "ack", warning.seq)
