"""Expected attendance and the alert rules as plain functions: plans and devices in, findings out."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from presence.alerts.rules import AlertRules, Subject, alerts_evaluate_rules
from presence.attendance import (
    Assignment,
    Place,
    PlannedMember,
    Reason,
    WeddingPlan,
    attendance_expected,
    member_at_venue,
    wedding_plans,
)
from presence.models import AlertKind, AlertSeverity
from presence.state import DevicePresence, MemberPresence, member_merge
from presence.vocabulary import PresenceStatus
from tests.factories import TimelineItemFactory
from tests.personas import WeddingParty

ANA = PlannedMember(id=1, role="couple", name="Ana", is_key_person=True)
PRIYA = PlannedMember(id=2, role="planner", name="Priya", is_key_person=True)
PAULA = PlannedMember(id=3, role="photographer", name="Paula", is_key_person=True)
OLU = PlannedMember(id=4, role="officiant", name="Olu", is_key_person=True)
VICTOR = PlannedMember(id=5, role="venue", name="Victor", is_key_person=False)
CARMEN = PlannedMember(id=6, role="caterer", name="Carmen", is_key_person=False)
GIL = PlannedMember(id=7, role="guest", name="Gil", is_key_person=False)
EVERYONE = (ANA, PRIYA, PAULA, OLU, VICTOR, CARMEN, GIL)


def plan(
    *, time_zone: str = "Europe/Lisbon", day: dt.date = dt.date(2026, 6, 13), ceremony: dt.time = dt.time(16, 0), **kw
) -> WeddingPlan:
    ceremony_at = dt.datetime.combine(day, ceremony, tzinfo=zoneinfo.ZoneInfo(time_zone)).astimezone(dt.UTC)
    values = {"members": EVERYONE, "active": True, **kw}
    return WeddingPlan(
        wedding_id=42, name="Ana & Ben", date=day, time_zone=time_zone, ceremony_at=ceremony_at, **values
    )


def device(member: PlannedMember, *, now: dt.datetime, **fields) -> DevicePresence:
    values = {
        "wedding_id": 42,
        "member_id": member.id,
        "role": member.role,
        "device": f"socket-{member.id}",
        "node": "n1",
        "heartbeat_interval": 10,
        "last_seen": now.timestamp(),
        **fields,
    }
    return DevicePresence(**values)


def everyone_at_venue(now: dt.datetime, *, but: PlannedMember | None = None) -> list[DevicePresence]:
    return [device(m, now=now, location="ceremony_area") for m in EVERYONE if m is not but]


@pytest.fixture
def rules() -> AlertRules:
    return AlertRules.from_settings()


# --- Expected attendance ---------------------------------------------------------------------------


def test_who_is_expected_where_and_when(rules: AlertRules) -> None:
    ceremony_start = dt.datetime(2026, 6, 13, 15, 0, tzinfo=dt.UTC)  # 16:00 in Lisbon (summer time)
    setup = Assignment(
        member_id=CARMEN.id,
        title="Cocktail service",
        starts_at=ceremony_start + dt.timedelta(hours=1),
        ends_at=ceremony_start + dt.timedelta(hours=2),
    )
    guest_item = Assignment(member_id=GIL.id, title="Not a vendor", starts_at=ceremony_start, ends_at=None)
    wedding = plan(assignments=(setup, guest_item))
    expected = {(e.member_id, e.reason): e for e in attendance_expected(plan=wedding, rules=rules.attendance)}

    for key_person in (ANA, PRIYA, PAULA, OLU):
        e = expected[(key_person.id, Reason.KEY_PERSON)]
        assert (e.place, e.starts_at) == (Place.VENUE, ceremony_start - dt.timedelta(minutes=30))
        assert e.ends_at == ceremony_start + dt.timedelta(minutes=60)
    carmen = expected[(CARMEN.id, Reason.TIMELINE)]
    assert (carmen.place, carmen.starts_at, carmen.ends_at, carmen.title) == (
        Place.VENUE,
        setup.starts_at - dt.timedelta(minutes=15),
        setup.ends_at,
        "Cocktail service",
    )
    victor = expected[(VICTOR.id, Reason.VENUE_CONTACT)]
    lisbon_midnight = dt.datetime(2026, 6, 12, 23, 0, tzinfo=dt.UTC)
    assert (victor.place, victor.starts_at, victor.ends_at) == (
        Place.ONLINE,
        lisbon_midnight,
        lisbon_midnight + dt.timedelta(days=1),
    )
    assert not any(member_id == GIL.id for member_id, _ in expected)
    assert attendance_expected(plan=plan(active=False), rules=rules.attendance) == []


def test_the_venue_contacts_day_has_its_own_length_on_dst_days(rules: AlertRules) -> None:
    # Europe/Lisbon moves its clocks back on 2026-10-25: that local date lasts 25 hours.
    wedding = plan(day=dt.date(2026, 10, 25))
    victor = next(e for e in attendance_expected(plan=wedding, rules=rules.attendance) if e.member_id == VICTOR.id)
    assert victor.ends_at is not None
    assert victor.ends_at - victor.starts_at == dt.timedelta(hours=25)


def _presence(**fields) -> MemberPresence | None:
    return member_merge([device(PAULA, now=dt.datetime(2026, 6, 13, tzinfo=dt.UTC), **fields)])


@pytest.mark.parametrize(
    ("fields", "at_venue"),
    [
        ({"location": "ceremony_area"}, True),
        ({"location": "parking"}, True),
        ({"location": "off_site"}, False),
        ({"location": "off_site", "activity": "working"}, False),
        ({"activity": "en_route"}, False),
        ({"activity": "done"}, False),
        ({"activity": "setup"}, True),
        ({}, True),  # online and sharing nothing: the benefit of the doubt
        ({"status": PresenceStatus.AWAY}, True),
        ({"status": PresenceStatus.OFFLINE}, False),
    ],
)
def test_what_counts_as_at_the_venue(fields: dict, at_venue: bool) -> None:
    assert member_at_venue(_presence(**fields)) is at_venue


def test_nobody_is_at_the_venue_without_presence() -> None:
    assert member_at_venue(None) is False


@pytest.mark.django_db
def test_plans_are_read_in_three_queries_whatever_the_number_of_weddings(
    party: WeddingParty, django_assert_num_queries
) -> None:
    item = TimelineItemFactory(wedding=party.wedding, title="First look")
    item.assigned_vendors.add(party.paula, party.carmen)
    other = TimelineItemFactory(title="Elsewhere")
    party.gil.is_active = False
    party.gil.save()
    with django_assert_num_queries(3):
        plans = wedding_plans(wedding_ids=[party.wedding.pk, other.wedding_id])
    ours = plans[party.wedding.pk]
    assert {m.id for m in ours.members} == {m.pk for m in party.members} - {party.gil.pk}
    assert {m.id for m in ours.members if m.is_key_person} == {
        p.pk for p in (party.ana, party.ben, party.priya, party.paula, party.olu)
    }
    assert sorted(a.member_id for a in ours.assignments) == sorted([party.paula.pk, party.carmen.pk])
    assert plans[other.wedding_id].members == ()


# --- key_person_missing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes_before", "severity"),
    [
        (61, None),
        (60, AlertSeverity.INFO),
        (45, AlertSeverity.INFO),
        (30, AlertSeverity.WARNING),
        (25, AlertSeverity.WARNING),
        (15, AlertSeverity.CRITICAL),
        (1, AlertSeverity.CRITICAL),
        (-30, AlertSeverity.CRITICAL),  # the ceremony has started and she is still missing
        (-60, None),  # the ceremony is over: no longer watched
    ],
)
def test_a_missing_key_person_at_each_step(rules: AlertRules, minutes_before: int, severity: AlertSeverity | None):
    wedding = plan()
    now = wedding.ceremony_at - dt.timedelta(minutes=minutes_before)
    evaluation = alerts_evaluate_rules(plan=wedding, devices=everyone_at_venue(now, but=PAULA), now=now, rules=rules)
    subject = Subject(kind=AlertKind.KEY_PERSON_MISSING, member_id=PAULA.id)
    finding = evaluation.findings.get(subject)
    assert (finding.severity if finding else None) == severity
    if finding is not None:
        assert finding.message.startswith("Paula (photographer) is not online")
    # Everyone else is where they should be: no other key person is reported.
    assert [s for s in evaluation.findings if s.kind is AlertKind.KEY_PERSON_MISSING] == ([subject] if finding else [])


@pytest.mark.parametrize("minutes_before", [60, 30, 15])
def test_a_key_person_at_the_venue_raises_nothing(rules: AlertRules, minutes_before: int) -> None:
    wedding = plan()
    now = wedding.ceremony_at - dt.timedelta(minutes=minutes_before)
    evaluation = alerts_evaluate_rules(plan=wedding, devices=everyone_at_venue(now), now=now, rules=rules)
    assert evaluation.findings == {}
    assert evaluation.fine[Subject(kind=AlertKind.KEY_PERSON_MISSING, member_id=PAULA.id)] == (
        "Paula (photographer) is at the venue."
    )


def test_a_key_person_online_but_off_site_is_missing(rules: AlertRules) -> None:
    wedding = plan()
    now = wedding.ceremony_at - dt.timedelta(minutes=20)
    devices = [*everyone_at_venue(now, but=PAULA), device(PAULA, now=now, location="off_site", battery=80)]
    finding = alerts_evaluate_rules(plan=wedding, devices=devices, now=now, rules=rules).findings[
        Subject(kind=AlertKind.KEY_PERSON_MISSING, member_id=PAULA.id)
    ]
    assert finding.severity is AlertSeverity.WARNING
    assert finding.message == "Paula (photographer) is not at the venue (off_site), 20 min before the ceremony."


def test_a_cancelled_wedding_raises_nothing(rules: AlertRules) -> None:
    wedding = plan(active=False)
    now = wedding.ceremony_at - dt.timedelta(minutes=10)
    assert alerts_evaluate_rules(plan=wedding, devices=[], now=now, rules=rules).findings == {}


# --- venue_contact_offline ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time_zone", "now_utc", "wedding_day"),
    [
        # 2026-06-13 in Auckland (UTC+12) begins at 12:00 UTC on the 12th.
        ("Pacific/Auckland", dt.datetime(2026, 6, 12, 12, 30, tzinfo=dt.UTC), True),
        ("Pacific/Auckland", dt.datetime(2026, 6, 12, 11, 30, tzinfo=dt.UTC), False),
        ("Pacific/Auckland", dt.datetime(2026, 6, 13, 12, 30, tzinfo=dt.UTC), False),
        # ... and in Los Angeles (UTC-7 in June) it ends at 07:00 UTC on the 14th.
        ("America/Los_Angeles", dt.datetime(2026, 6, 14, 6, 30, tzinfo=dt.UTC), True),
        ("America/Los_Angeles", dt.datetime(2026, 6, 13, 6, 30, tzinfo=dt.UTC), False),
        ("Europe/Lisbon", dt.datetime(2026, 6, 12, 23, 30, tzinfo=dt.UTC), True),
        ("Europe/Lisbon", dt.datetime(2026, 6, 12, 22, 30, tzinfo=dt.UTC), False),
        ("Asia/Kolkata", dt.datetime(2026, 6, 12, 18, 45, tzinfo=dt.UTC), True),  # UTC+5:30
        ("Asia/Kolkata", dt.datetime(2026, 6, 12, 18, 15, tzinfo=dt.UTC), False),
    ],
)
def test_the_venue_contact_offline_on_the_wedding_day_in_its_own_time_zone(
    rules: AlertRules, time_zone: str, now_utc: dt.datetime, wedding_day: bool
) -> None:
    wedding = plan(time_zone=time_zone, ceremony=dt.time(14, 0))
    subject = Subject(kind=AlertKind.VENUE_CONTACT_OFFLINE, member_id=VICTOR.id)
    offline = alerts_evaluate_rules(plan=wedding, devices=[], now=now_utc, rules=rules)
    assert (subject in offline.findings) is wedding_day
    if wedding_day:
        assert offline.findings[subject].severity is AlertSeverity.WARNING
        online = alerts_evaluate_rules(
            plan=wedding, devices=[device(VICTOR, now=now_utc, location="off_site")], now=now_utc, rules=rules
        )
        assert subject not in online.findings
        assert subject in online.fine  # online is all the venue contact owes the day


# --- low_battery -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("battery", "charging", "low"),
    [(14, False, True), (14, None, True), (14, True, False), (15, False, False), (3, False, True), (None, None, False)],
)
def test_low_battery_is_under_the_line_and_not_charging(
    rules: AlertRules, battery: int | None, charging: bool | None, low: bool
) -> None:
    wedding = plan()
    now = wedding.ceremony_at - dt.timedelta(hours=5)
    phone = device(CARMEN, now=now, battery=battery, charging=charging, client_device="carmens-phone")
    evaluation = alerts_evaluate_rules(plan=wedding, devices=[phone], now=now, rules=rules)
    subject = Subject(kind=AlertKind.LOW_BATTERY, member_id=CARMEN.id, device="carmens-phone")
    assert (subject in evaluation.findings) is low
    assert (subject in evaluation.fine) is not low
    if low:
        assert evaluation.findings[subject].message == f"Carmen (caterer)'s device is at {battery} % and not charging."


def test_low_battery_is_one_finding_per_device_and_none_for_guests(rules: AlertRules) -> None:
    wedding = plan()
    now = wedding.ceremony_at - dt.timedelta(hours=5)
    devices = [
        # A phone reconnecting holds two sockets for a moment: one device, told by its newest socket.
        device(CARMEN, now=now, device="old", client_device="phone", battery=12, charging=False, updated_at=1.0),
        device(CARMEN, now=now, device="new", client_device="phone", battery=11, charging=False, updated_at=2.0),
        device(CARMEN, now=now, device="tablet-socket", battery=9, charging=False),  # no client name: its socket
        device(GIL, now=now, battery=5, charging=False),
    ]
    findings = alerts_evaluate_rules(plan=wedding, devices=devices, now=now, rules=rules).findings
    battery = {s: f for s, f in findings.items() if s.kind is AlertKind.LOW_BATTERY}
    assert sorted(s.device for s in battery) == ["phone", "tablet-socket"]
    assert "11 %" in battery[Subject(AlertKind.LOW_BATTERY, CARMEN.id, "phone")].message
