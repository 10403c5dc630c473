"""The pieces behind the metrics: the percentile a node reports, the labels that keep series
bounded, and the counters fed from the services (issue 21)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from monitoring.worker_metrics import TaskTimer, task_label
from realtime.node.registry import CounterWindow, LatencyWindow, bucket_quantile, socket_role
from realtime.protocol import close_code_name
from realtime.socket_budget import SocketBudget
from records.services import SyncRefused, SyncRequest, actor_for_member, record_sync, records_sync_batch
from tests.factories import TimelineItemFactory
from tests.personas import WeddingParty

INF = float("inf")


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_percentile_is_interpolated_in_its_bucket_as_prometheus_does() -> None:
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (INF, 100.0)]
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.01)
    assert bucket_quantile(0.99, [(0.1, 10.0), (INF, 20.0)]) == 0.1  # past the last bound: that bound
    assert bucket_quantile(0.99, [(0.1, 0.0), (INF, 0.0)]) is None


def test_a_nodes_p99_covers_about_the_last_minute_only() -> None:
    histogram = Histogram("t_latency", "t", buckets=(0.001, 0.0025, 0.005, 0.25, 0.5), registry=CollectorRegistry())
    window = LatencyWindow(histogram=histogram, reports_per_minute=2)  # a report every 30 s
    for _ in range(100):
        histogram.observe(0.004)
    assert window.p99_ms() == pytest.approx(round((0.0025 + 0.0025 * 0.99) * 1000, 1))
    for _ in range(100):
        histogram.observe(0.4)
    assert window.p99_ms() == pytest.approx(round((0.25 + 0.25 * 0.99) * 1000, 1))  # the fast ones are older
    assert window.p99_ms() == pytest.approx(497.5)  # a minute back still holds the slow ones
    assert window.p99_ms() is None  # nothing delivered in the last minute


def test_a_nodes_error_closes_are_those_of_about_the_last_minute() -> None:
    readings = iter([5.0, 9.0, 12.0, 12.0, 12.0])
    window = CounterWindow(read=lambda: next(readings), reports_per_minute=2)
    assert [window.increase() for _ in range(5)] == [0, 4, 7, 3, 0]


def test_labels_come_from_closed_sets_whatever_a_client_sends() -> None:
    assert socket_role(roles=["guest"], observer=False) == "guest"
    assert socket_role(roles=["florist", "florist"], observer=False) == "florist"
    assert socket_role(roles=["florist", "guest"], observer=False) == "several"
    assert socket_role(roles=[], observer=False) == "none"
    assert socket_role(roles=["planner"], observer=True) == "observer"
    assert [close_code_name(code) for code in (1000, 1001, 1006, 1011, 4008, 4401, 4403, None, 3999, 4999)] == [
        "normal",
        "going_away",
        "abnormal",
        "server_error",
        "slow",
        "unauthorized",
        "forbidden",
        "no_status",
        "other",
        "other",
    ]
    assert task_label("presence.tasks.sweep_presence") == "presence.tasks.sweep_presence"
    assert task_label("celery.backend_cleanup") == "other"
    assert task_label(None) == "other"


def test_a_task_run_is_counted_by_outcome_and_timed() -> None:
    timer, task = TaskTimer(), _Named("monitoring.tasks.escalate_unacknowledged")
    before = counted("wedsync_task_runs_total", task=task.name, outcome="failed")
    runs = counted("wedsync_task_duration_seconds_count", task=task.name)
    timer.started(sender=task, task_id="a")  # type: ignore[arg-type]
    timer.ended(sender=task, task_id="a", state="FAILURE")  # type: ignore[arg-type]
    timer.ended(sender=task, task_id="never-started", state="SUCCESS")  # type: ignore[arg-type]
    assert counted("wedsync_task_runs_total", task=task.name, outcome="failed") == before + 1
    assert counted("wedsync_task_duration_seconds_count", task=task.name) == runs + 1  # the unstarted one is not timed


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_a_rate_limited_op_is_counted_by_op() -> None:
    before = counted("wedsync_rate_limit_refusals_total", op="publish")
    SocketBudget(user_id=1, subscribe_floor=10).refused("publish")
    assert counted("wedsync_rate_limit_refusals_total", op="publish") == before + 1


@pytest.mark.requires_postgres
@pytest.mark.django_db
def test_sync_outcomes_are_counted_once_committed(party: WeddingParty) -> None:
    item = TimelineItemFactory(wedding=party.wedding, title="First dance")
    outcomes = ("applied", "merged", "duplicate", "refused", "conflict")
    before: dict[str, Any] = {
        outcome: counted("wedsync_record_sync_ops_total", outcome=outcome) for outcome in outcomes
    }

    def sync(member: Any, base: int, op_id: str | None = None, **changes: Any) -> str:
        request = SyncRequest(kind="timeline_item", record_id=item.pk, base_version=base, changes=changes, op_id=op_id)
        return record_sync(actor=actor_for_member(member), request=request).outcome

    assert sync(party.priya, 1, op_id="op-1", title="Dance") == "applied"
    assert sync(party.priya, 1, op_id="op-1", title="Dance") == "applied"  # resent: answered as before
    assert sync(party.paula, 1, location="reception_hall") == "merged"
    with pytest.raises(SyncRefused):
        sync(party.gil, 3, title="Guests may not")
    stale = SyncRequest(kind="timeline_item", record_id=item.pk, base_version=1, changes={"title": "Other"})
    with pytest.raises(SyncRefused) as batch:
        records_sync_batch(actor=actor_for_member(party.paula), requests=[stale])
    assert batch.value.code == "conflict"
    gained = {
        outcome: counted("wedsync_record_sync_ops_total", outcome=outcome) - before[outcome] for outcome in outcomes
    }
    assert gained == {"applied": 1, "merged": 1, "duplicate": 1, "refused": 1, "conflict": 1}
