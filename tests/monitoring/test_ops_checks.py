"""Beat's checks of the service (issue 21, monitoring/services/ops_checks.py): the real beat task
against node reports in the real Redis, the clock moved by time-machine. Each rule is raised once
its breach lasts, escalated when critical, resolved once health lasts, and never flaps."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import time_machine
from django.test import Client
from prometheus_client import REGISTRY

from monitoring.models import Escalation, EscalationSubject, OpsAlert, OpsAlertStatus, OpsCheck
from monitoring.node_reports import NodeReport, registry_client
from monitoring.ops_probes import ops_observations
from monitoring.services.nodes import node_report_write
from monitoring.services.ops_checks import Observation, ObservationRound, ops_checks_record
from monitoring.tasks import run_ops_checks
from tests.personas import WeddingParty, make_coordinator, make_superuser
from wedsync.redis_keys import NODE_REGISTRY, node_drain_key, node_report_key

pytestmark = [pytest.mark.requires_redis, pytest.mark.requires_postgres, pytest.mark.django_db]

T0 = dt.datetime(2026, 6, 13, 14, 0, tzinfo=dt.UTC)  # a June Saturday
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def fleet() -> Iterator[redis.Redis]:
    """The real registry, emptied before and after: only this test's nodes are in the fleet."""
    client = registry_client()
    assert client is not None, "the tests run with REDIS_URL"

    def forget() -> None:
        names = [name.decode() for name in client.zrange(NODE_REGISTRY, 0, -1)]  # type: ignore[union-attr]
        client.delete(NODE_REGISTRY, *(node_report_key(node=name) for name in names))
        client.delete(*(node_drain_key(node=name) for name in names or ["none"]))

    forget()
    yield client
    forget()


def report(client: redis.Redis, name: str, **fields: Any) -> None:
    values: dict[str, Any] = {
        "name": name,
        "version": "2026.6.1",
        "started_at": T0.timestamp() - 3600,
        "reported_at": dt.datetime.now(tz=dt.UTC).timestamp(),
        "sockets": 200,
        "subscriptions_by_role": {"guest": 150},
        "weddings": 1,
        "cpu_percent": 40.0,
        "rss_bytes": 90_000_000,
        "loop_lag_ms": 2.0,
    }
    node_report_write(client=client, report=NodeReport(**{**values, **fields}), ttl=60)


def alerts(kind: OpsCheck, subject: str) -> list[tuple[str, str]]:
    return [(alert.status, alert.severity) for alert in OpsAlert.objects.filter(kind=kind, subject=subject)]


def test_a_slow_node_is_raised_once_after_five_minutes_escalated_and_resolved_after_five_healthy(
    fleet: redis.Redis,
) -> None:
    with time_machine.travel(T0, tick=False) as clock:

        def minute(p99: float) -> None:
            report(fleet, "n-slow", delivery_p99_ms=p99)
            run_ops_checks()
            clock.shift(MINUTE)

        for _ in range(5):  # 14:00 to 14:04: breaching, not yet for five minutes
            minute(150.0)
        assert alerts(OpsCheck.DELIVERY_LATENCY, "n-slow") == []
        minute(150.0)  # 14:05: five minutes
        assert alerts(OpsCheck.DELIVERY_LATENCY, "n-slow") == [("open", "critical")]
        for p99 in (180.0, 90.0, 95.0):  # still slow, then between the threshold and its 80 %: stays open
            minute(p99)
        (alert,) = OpsAlert.objects.filter(kind=OpsCheck.DELIVERY_LATENCY, subject="n-slow")
        assert (alert.status, alert.value, alert.threshold) == (OpsAlertStatus.OPEN, 180.0, 100.0)
        assert alert.message == "delivery p99 150 ms over the last minute (SLO 100 ms)"
        for _ in range(5):  # healthy from 14:09, not yet for five minutes
            minute(40.0)
        assert alerts(OpsCheck.DELIVERY_LATENCY, "n-slow") == [("open", "critical")]
        minute(40.0)  # 14:14: five minutes healthy
        assert alerts(OpsCheck.DELIVERY_LATENCY, "n-slow") == [("resolved", "critical")]

    (escalation,) = Escalation.objects.filter(subject=EscalationSubject.OPERATIONS)
    assert (escalation.ops_alert_id, escalation.wedding_id) == (alert.pk, None)
    body = escalation.payload
    assert (body["subject"], body["severity"], body["wedding"], body["planners"]) == (
        "operations",
        "critical",
        None,
        [],
    )
    assert body["summary"] == "Event delivery p99 on n-slow: delivery p99 150 ms over the last minute (SLO 100 ms)"
    assert body["operations"] == {
        "id": alert.pk,
        "check": "delivery_latency",
        "subject": "n-slow",
        "value": 150.0,
        "threshold": 100.0,
        "message": alert.message,
    }
    assert REGISTRY.get_sample_value("wedsync_ops_alerts_open", {"check": "delivery_latency"}) == 0


@pytest.mark.parametrize("healthy", [40.0, 90.0])
def test_a_value_that_keeps_crossing_its_threshold_never_raises(fleet: redis.Redis, healthy: float) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for step in range(30):  # half an hour of one slow minute in two
            report(fleet, "n-flaky", delivery_p99_ms=250.0 if step % 2 else healthy, presence_p99_ms=150.0)
            run_ops_checks()
            clock.shift(MINUTE)
    assert alerts(OpsCheck.DELIVERY_LATENCY, "n-flaky") == []
    assert alerts(OpsCheck.PRESENCE_LATENCY, "n-flaky") == []  # 150 ms is within its 200 ms


def test_presence_and_error_closes_are_raised_per_node_with_their_own_severity(fleet: redis.Redis) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(6):
            report(fleet, "n-busy", presence_p99_ms=400.0, error_closes_last_minute=25)
            report(fleet, "n-calm", presence_p99_ms=30.0, error_closes_last_minute=0)
            run_ops_checks()
            clock.shift(MINUTE)
    assert alerts(OpsCheck.PRESENCE_LATENCY, "n-busy") == [("open", "warning")]
    assert alerts(OpsCheck.ERROR_CLOSES, "n-busy") == [("open", "critical")]
    assert alerts(OpsCheck.PRESENCE_LATENCY, "n-calm") == alerts(OpsCheck.ERROR_CLOSES, "n-calm") == []
    escalated = Escalation.objects.filter(subject=EscalationSubject.OPERATIONS)
    assert [escalation.payload["operations"]["check"] for escalation in escalated] == ["error_closes"]


def test_a_node_that_stops_without_a_drain_is_missing_and_a_drained_one_is_not(fleet: redis.Redis) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for name in ("n-gone", "n-drained", "n-up"):
            report(fleet, name)
        fleet.set(node_drain_key(node="n-drained"), b"1")
        fleet.delete(node_report_key(node="n-gone"), node_report_key(node="n-drained"))  # as their TTLs would
        run_ops_checks()
        clock.shift(MINUTE)
        report(fleet, "n-up")
        run_ops_checks()
        assert alerts(OpsCheck.NODE_MISSING, "n-gone") == [("open", "critical")]
        assert alerts(OpsCheck.NODE_MISSING, "n-drained") == alerts(OpsCheck.NODE_MISSING, "n-up") == []
        (alert,) = OpsAlert.objects.filter(kind=OpsCheck.NODE_MISSING)
        assert alert.message == "n-gone stopped reporting and was not drained first"

        for _ in range(2):  # back: resolved once it has reported for a minute
            clock.shift(MINUTE)
            report(fleet, "n-gone")
            run_ops_checks()
        assert alerts(OpsCheck.NODE_MISSING, "n-gone") == [("resolved", "critical")]


def test_redis_that_does_not_answer_is_observed_as_a_breach_and_the_database_as_healthy() -> None:
    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    unknown = ops_observations(client=nowhere)
    assert unknown.covered == frozenset()  # the fleet could not be read: its checks keep their clocks
    by_check = {observation.check: observation for observation in unknown.observations}
    assert math.isinf(by_check[OpsCheck.REDIS_LATENCY].value)
    assert by_check[OpsCheck.REDIS_LATENCY].message == "Redis did not answer (bound 50 ms)"
    assert 0 < by_check[OpsCheck.DATABASE_LATENCY].value < 50
    assert OpsCheck.NODE_MISSING not in by_check  # the fleet is unknown, not missing

    client = registry_client()
    assert client is not None
    answered = {observation.check: observation for observation in ops_observations(client=client).observations}
    assert 0 < answered[OpsCheck.REDIS_LATENCY].value < 50


def test_an_unanswering_redis_is_raised_after_a_minute_as_a_warning(fleet: redis.Redis) -> None:
    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(2):
            ops_checks_record(observed=ops_observations(client=nowhere), now=dt.datetime.now(tz=dt.UTC))
            clock.shift(MINUTE)
    assert alerts(OpsCheck.REDIS_LATENCY, "") == [("open", "warning")]
    (alert,) = OpsAlert.objects.filter(kind=OpsCheck.REDIS_LATENCY)
    assert alert.value is None  # no answer, no figure
    assert not Escalation.objects.filter(subject=EscalationSubject.OPERATIONS).exists()  # warnings stay here


def test_superusers_see_the_alerts_in_the_admin_and_coordinators_do_not(party: WeddingParty) -> None:
    OpsAlert.objects.create(
        kind=OpsCheck.TASK_BACKLOG,
        subject="",
        severity="warning",
        message="512 Celery tasks wait in the queue (bound 200): the worker is behind or down",
        value=512.0,
        threshold=200.0,
        raised_at=T0,
    )
    admin = Client()
    admin.force_login(make_superuser())
    page = admin.get("/admin/monitoring/opsalert/")
    assert page.status_code == 200
    assert "512 Celery tasks wait in the queue" in page.content.decode()
    coordinator = Client()
    coordinator.force_login(make_coordinator(party.wedding))
    assert coordinator.get("/admin/monitoring/opsalert/").status_code == 403
    assert "opsalert" not in coordinator.get("/admin/").content.decode()


def test_an_alert_waits_while_the_fleet_is_unknown_and_resolves_once_its_node_is_gone(fleet: redis.Redis) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(6):
            report(fleet, "n-left", delivery_p99_ms=300.0)
            run_ops_checks()
            clock.shift(MINUTE)
        assert alerts(OpsCheck.DELIVERY_LATENCY, "n-left") == [("open", "critical")]
        for _ in range(10):  # Redis away: nothing is known of the fleet, so nothing of it resolves
            ops_checks_record(observed=ObservationRound([], covered=frozenset()), now=dt.datetime.now(tz=dt.UTC))
            clock.shift(MINUTE)
        assert alerts(OpsCheck.DELIVERY_LATENCY, "n-left") == [("open", "critical")]
        fleet.set(node_drain_key(node="n-left"), b"1")  # drained, then stopped: gone on purpose
        fleet.delete(node_report_key(node="n-left"))
        for _ in range(6):
            run_ops_checks()
            clock.shift(MINUTE)
    assert alerts(OpsCheck.DELIVERY_LATENCY, "n-left") == [("resolved", "critical")]
    assert alerts(OpsCheck.NODE_MISSING, "n-left") == []


def test_a_crashed_node_is_forgotten_after_an_hour_and_its_alert_resolves(fleet: redis.Redis) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        report(fleet, "n-crashed")
        fleet.delete(node_report_key(node="n-crashed"))  # killed: its report expires, no drain
        for _ in range(2):
            run_ops_checks()
            clock.shift(MINUTE)
        assert alerts(OpsCheck.NODE_MISSING, "n-crashed") == [("open", "critical")]
        clock.shift(dt.timedelta(minutes=59))  # its name came back with another PID, or never
        for _ in range(2):
            run_ops_checks()
            clock.shift(MINUTE)
    assert alerts(OpsCheck.NODE_MISSING, "n-crashed") == [("resolved", "critical")]


def test_a_gap_in_the_checks_starts_the_clocks_afresh(fleet: redis.Redis) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(4):  # four minutes slow
            report(fleet, "n-gap", delivery_p99_ms=300.0)
            run_ops_checks()
            clock.shift(MINUTE)
        clock.shift(dt.timedelta(minutes=10))  # the worker was down: nobody saw those ten minutes
        report(fleet, "n-gap", delivery_p99_ms=300.0)
        run_ops_checks()
        assert alerts(OpsCheck.DELIVERY_LATENCY, "n-gap") == []  # not 15 minutes of breach, one observation
        for _ in range(5):
            clock.shift(MINUTE)
            report(fleet, "n-gap", delivery_p99_ms=300.0)
            run_ops_checks()
    assert alerts(OpsCheck.DELIVERY_LATENCY, "n-gap") == [("open", "critical")]


def test_a_queue_backlog_is_read_from_the_broker_raised_after_a_minute_and_resolved_after_five(
    fleet: redis.Redis, settings: Any
) -> None:
    settings.OPS_TASK_BACKLOG = 20
    queue = "celery"  # the default queue's list on the Redis broker
    try:
        fleet.delete(queue)  # what other tests queued in this database, with no worker to take it
        fleet.rpush(queue, *[b"{}"] * 25)  # 25 messages nobody takes
        with time_machine.travel(T0, tick=False) as clock:
            for _ in range(2):
                run_ops_checks()
                clock.shift(MINUTE)
            assert alerts(OpsCheck.TASK_BACKLOG, "") == [("open", "warning")]
            (alert,) = OpsAlert.objects.filter(kind=OpsCheck.TASK_BACKLOG)
            assert alert.message == "25 Celery tasks wait in the queue (bound 20): the worker is behind or down"
            fleet.ltrim(queue, 0, 16)  # 17 left: under the bound, above 80 % of it: stays open
            for _ in range(6):
                run_ops_checks()
                clock.shift(MINUTE)
            assert alerts(OpsCheck.TASK_BACKLOG, "") == [("open", "warning")]
            fleet.ltrim(queue, 0, 9)  # 10 left: healthy, for five minutes
            for _ in range(6):
                run_ops_checks()
                clock.shift(MINUTE)
        assert alerts(OpsCheck.TASK_BACKLOG, "") == [("resolved", "warning")]
    finally:
        fleet.delete(queue)


def test_a_slow_database_is_raised_as_a_warning_and_resolved(fleet: redis.Redis) -> None:
    def slow_round(milliseconds: float) -> ObservationRound:
        observed = Observation(
            check=OpsCheck.DATABASE_LATENCY,
            subject="",
            value=milliseconds,
            threshold=50.0,
            message=f"PostgreSQL answers SELECT 1 in {milliseconds:.1f} ms (bound 50 ms)",
        )
        return ObservationRound([observed], covered=frozenset())

    with time_machine.travel(T0, tick=False) as clock:
        for milliseconds in (120.0, 140.0):
            ops_checks_record(observed=slow_round(milliseconds), now=dt.datetime.now(tz=dt.UTC))
            clock.shift(MINUTE)
        assert alerts(OpsCheck.DATABASE_LATENCY, "") == [("open", "warning")]
        for _ in range(6):
            ops_checks_record(observed=slow_round(3.0), now=dt.datetime.now(tz=dt.UTC))
            clock.shift(MINUTE)
    assert alerts(OpsCheck.DATABASE_LATENCY, "") == [("resolved", "warning")]
    assert not Escalation.objects.filter(subject=EscalationSubject.OPERATIONS).exists()
