"""The capacity forecast (issue 21, monitoring/capacity.py) against a calendar whose figures are
worked out by hand below; its metrics, its alert in beat, and the admin's chart."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import time_machine
from django.test import Client
from prometheus_client import REGISTRY

from monitoring.models import OpsAlert, OpsCheck
from monitoring.node_reports import registry_client
from monitoring.selectors import forecast_from_today
from monitoring.tasks import run_ops_checks
from tests.factories import MemberFactory, WeddingFactory
from tests.monitoring.test_ops_checks import report
from tests.personas import make_coordinator, make_superuser
from wedsync.models import Member, Wedding, WeddingStatus
from wedsync.redis_keys import NODE_REGISTRY, node_report_key

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db]

LISBON, NEW_YORK = zoneinfo.ZoneInfo("Europe/Lisbon"), zoneinfo.ZoneInfo("America/New_York")
WEDNESDAY = dt.datetime(2026, 6, 10, 9, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def model(settings: Any) -> None:
    """Round figures: half the guests online, one socket each, one event a wedding a second, the
    window from 2 h before the ceremony to 6 h after; a node holds 50 sockets, one spare."""
    settings.CAPACITY_GUEST_ONLINE_SHARE = 0.5
    settings.CAPACITY_SOCKETS_PER_MEMBER = 1.0
    settings.CAPACITY_EVENTS_PER_WEDDING_PER_SECOND = 1.0
    settings.CAPACITY_PEAK_BEFORE_HOURS = 2.0
    settings.CAPACITY_PEAK_AFTER_HOURS = 6.0
    settings.CAPACITY_SOCKETS_PER_NODE = 50
    settings.CAPACITY_DELIVERIES_PER_NODE = 5000
    settings.CAPACITY_SPARE_NODES = 1


def wedding(ceremony: dt.datetime, **roles: int) -> Wedding:
    made: Wedding = WeddingFactory(date=ceremony.date(), ceremony_at=ceremony, time_zone=str(ceremony.tzinfo))
    for role, count in roles.items():
        for _ in range(count):
            MemberFactory(wedding=made, role=role)
    return made


@pytest.fixture
def calendar(model: None) -> None:
    # Thursday 11 June, 12:00 in Lisbon (11:00 UTC): 2 + 1 + 10 of 20 guests = 13 sockets, 09:00-17:00 UTC.
    wedding(dt.datetime(2026, 6, 11, 12, 0, tzinfo=LISBON), couple=2, planner=1, guest=20)
    # Saturday 13 June, 16:00 in Lisbon (15:00 UTC): 2 + 1 + 5 vendors + 50 of 100 guests = 58, 13:00-21:00.
    wedding(dt.datetime(2026, 6, 13, 16, 0, tzinfo=LISBON), couple=2, planner=1, florist=2, caterer=3, guest=100)
    # Saturday 13 June, 17:00 in New York (21:00 UTC): 2 + 1 + 3 + 25 of 50 = 31, 19:00 to Sunday 03:00.
    wedding(dt.datetime(2026, 6, 13, 17, 0, tzinfo=NEW_YORK), couple=2, planner=1, venue=3, guest=50)
    # Tuesday 23 June, the last day: a wedding at 01:00 UTC on the 24th, past the 14 days, whose window
    # opens at 23:00 on the 23rd: 1 + 1 of 2 guests = 2 sockets in that hour.
    wedding(dt.datetime(2026, 6, 24, 1, 0, tzinfo=dt.UTC), planner=1, guest=2)
    # Neither of these loads anything: one cancelled, one whose members all left.
    cancelled = wedding(dt.datetime(2026, 6, 13, 14, 0, tzinfo=dt.UTC), couple=2, guest=400)
    Wedding.objects.filter(pk=cancelled.pk).update(status=WeddingStatus.CANCELLED)
    emptied = wedding(dt.datetime(2026, 6, 13, 14, 0, tzinfo=dt.UTC), couple=2, guest=400)
    Member.objects.filter(wedding=emptied).update(is_active=False)


def test_the_forecast_matches_the_calendar_worked_out_by_hand(calendar: None) -> None:
    with time_machine.travel(WEDNESDAY, tick=False):
        forecast = forecast_from_today()
    assert len(forecast) == 14 and forecast[0].day == dt.date(2026, 6, 10)
    by_day = {day.day.isoformat(): day for day in forecast}
    thursday, saturday, sunday = by_day["2026-06-11"], by_day["2026-06-13"], by_day["2026-06-14"]
    # 13 sockets from 09:00; nodes: 13 / 50 -> 1, plus the spare.
    assert (thursday.peak_at, thursday.weddings, thursday.sockets) == (
        dt.datetime(2026, 6, 11, 9, tzinfo=dt.UTC),
        1,
        13,
    )
    assert (thursday.events_per_second, thursday.deliveries_per_second, thursday.nodes) == (1.0, 13, 2)
    # Both Saturday weddings from 19:00 UTC: 58 + 31 = 89 sockets, 2 events/s, 89 deliveries/s;
    # nodes: 89 / 50 -> 2, plus the spare.
    assert (saturday.peak_at, saturday.weddings, saturday.sockets) == (
        dt.datetime(2026, 6, 13, 19, tzinfo=dt.UTC),
        2,
        89,
    )
    assert (saturday.events_per_second, saturday.deliveries_per_second, saturday.nodes) == (2.0, 89, 3)
    # New York's reception runs past midnight UTC into Sunday.
    assert (sunday.peak_at, sunday.sockets, sunday.nodes) == (dt.datetime(2026, 6, 14, 0, tzinfo=dt.UTC), 31, 2)
    # The wedding past the 14 days loads the last day's last hour.
    last = by_day["2026-06-23"]
    assert (last.peak_at, last.weddings, last.sockets, last.nodes) == (
        dt.datetime(2026, 6, 23, 23, tzinfo=dt.UTC),
        1,
        2,
        2,
    )
    # Every other day: no wedding, the minimum of one node and its spare.
    counted = (thursday, saturday, sunday, last)
    others = {(day.sockets, day.weddings, day.nodes, day.peak_at) for day in forecast if day not in counted}
    assert others == {(0, 0, 2, None)}


@pytest.fixture
def fleet() -> Iterator[redis.Redis]:
    client = registry_client()
    assert client is not None, "the tests run with REDIS_URL"

    def forget() -> None:
        names = [name.decode() for name in client.zrange(NODE_REGISTRY, 0, -1)]  # type: ignore[union-attr]
        client.delete(NODE_REGISTRY, *(node_report_key(node=name) for name in names))

    forget()
    yield client
    forget()


@pytest.mark.requires_redis
def test_beat_exports_the_forecast_and_warns_when_saturday_needs_more_nodes_than_report(
    calendar: None, fleet: redis.Redis
) -> None:
    with time_machine.travel(WEDNESDAY, tick=False) as clock:
        for _ in range(2):  # two nodes: enough for Thursday (2), one short for Saturday (3)
            report(fleet, "n-cap-1")
            report(fleet, "n-cap-2")
            run_ops_checks()
            clock.shift(MINUTE)
    assert REGISTRY.get_sample_value("wedsync_capacity_forecast_sockets", {"day": "3"}) == 89
    assert REGISTRY.get_sample_value("wedsync_capacity_forecast_events_per_second", {"day": "3"}) == 2.0
    assert REGISTRY.get_sample_value("wedsync_capacity_forecast_deliveries_per_second", {"day": "3"}) == 89
    assert REGISTRY.get_sample_value("wedsync_capacity_recommended_nodes", {"day": "1"}) == 2
    assert REGISTRY.get_sample_value("wedsync_capacity_recommended_nodes", {"day": "0"}) == 2
    assert REGISTRY.get_sample_value("wedsync_capacity_registered_nodes") == 2
    (alert,) = OpsAlert.objects.filter(kind=OpsCheck.CAPACITY)
    assert (alert.subject, alert.severity, alert.value, alert.threshold) == ("2026-06-13", "warning", 3.0, 2.0)
    assert alert.message == (
        "Saturday 2026-06-13: 2 weddings at 19:00 UTC, 89 sockets and 89 deliveries/s, "
        "need 3 nodes (spare included); 2 serve now"
    )

    with time_machine.travel(WEDNESDAY + 3 * MINUTE, tick=False) as clock:
        for _ in range(2):  # a third node: the warning resolves
            for name in ("n-cap-1", "n-cap-2", "n-cap-3"):
                report(fleet, name)
            run_ops_checks()
            clock.shift(MINUTE)
    alert.refresh_from_db()
    assert alert.status == "resolved"


def test_superusers_see_the_forecast_as_a_chart_and_coordinators_do_not(calendar: None, party: Any) -> None:
    admin = Client()
    admin.force_login(make_superuser())
    with time_machine.travel(WEDNESDAY, tick=False):
        assert 'href="/admin/capacity/"' in admin.get("/admin/").content.decode()
        page = admin.get("/admin/capacity/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count("<rect ") == 14
    assert "<title>Sat 13 Jun: 3 nodes</title>" in html
    assert (
        '<th scope="row">Saturday 2026-06-13</th><td>19:00</td><td>2</td><td>89</td><td>2.0</td><td>89</td><td>3</td>'
        in html
    )
    coordinator = Client()
    coordinator.force_login(make_coordinator(party.wedding))
    assert coordinator.get("/admin/capacity/").status_code == 403
