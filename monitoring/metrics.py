"""Every Prometheus metric the service exports, declared once, with bounded label values.

Label values come from closed sets (enums, fixed component names), never from user input, so
the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

AUDIT_ENTRIES = Counter(
    "wedsync_audit_entries_total",
    "Audit log entries written, by action and outcome.",
    ["action", "outcome"],
)

ADMIN_LOGIN_REFUSALS = Counter(
    "wedsync_admin_login_refusals_total",
    "Admin sign-ins refused, by reason: bad_credentials (counted towards a lockout) or locked_out.",
    ["reason"],
)

READINESS_FAILURES = Counter(
    "wedsync_readiness_failures_total",
    "Readiness probes that found a dependency down, by component.",
    ["component"],
)

ESCALATIONS_CREATED = Counter(
    "wedsync_escalations_total",
    "Critical alerts and emergencies escalated to the webhook (no planner acknowledged in time), by subject.",
    ["subject"],
)

ESCALATION_DELIVERY_ATTEMPTS = Counter(
    "wedsync_escalation_deliveries_total",
    "Escalation webhook attempts by outcome: delivered, retry, dead_lettered, no_webhook; and superseded: "
    "a delivery message that found another message's turn (a duplicate, a late retry, a re-queued copy).",
    ["outcome"],
)

EVENT_WEBHOOK_DELIVERIES = Counter(
    "wedsync_event_webhook_deliveries_total",
    "Event webhook attempts by outcome: delivered, retry, dead_lettered (the subscription is paused); paused: "
    "its service account may no longer receive the wedding's events; superseded: a delivery message that "
    "found another's turn (a duplicate or a late one).",
    ["outcome"],
)

EVENT_WEBHOOK_EVENTS = Counter(
    "wedsync_event_webhook_events_total",
    "Events delivered to event webhooks (an event sent to two subscriptions counts twice).",
)

LAYER_SENDS_DROPPED = Counter(
    "wedsync_layer_sends_dropped_total",
    "Channel-layer sends given up after a commit (the nodes repair the gap from the event log), by "
    "reason: timeout, overflow (too many waiting), error.",
    ["reason"],
)

RETENTION_PURGED_ROWS = Counter(
    "wedsync_retention_purged_rows_total",
    "Rows the retention purges deleted, by table (a model label: realtime.Event, wedsync.AuditLog, ...).",
    ["table"],
)

AUDIT_REFUSALS_COUNTED = Counter(
    "wedsync_audit_refusals_counted_total",
    "Unauthenticated refusals counted into their window's summary audit row instead of a row of their own, by action.",
    ["action"],
)

ADDRESS_LIMIT_REFUSALS = Counter(
    "wedsync_address_limit_refusals_total",
    "Requests refused because their source address passed a cap: handshakes, connections (sockets) or api.",
    ["limit"],
)


class DatabasePoolCollector(Collector):
    """This process's PostgreSQL connection pool, read from psycopg's counters at each scrape: how
    many connections it holds (in use, idle) of its maximum, how many hops wait for one, and how
    many gave up waiting (docs/operations.md: what to do when they do)."""

    def describe(self) -> Iterator[Metric]:
        return iter(())  # nothing to read at registration, before Django is set up

    def collect(self) -> Iterator[Metric]:
        from django.db import connections

        pool = getattr(connections["default"], "pool", None)  # None: SQLite, or DATABASE_POOL_MAX_SIZE=0
        if pool is None:
            return
        stats = pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        held = GaugeMetricFamily(
            "wedsync_db_pool_connections", "PostgreSQL connections the pool holds, by state.", labels=["state"]
        )
        held.add_metric(["in_use"], size - idle)
        held.add_metric(["idle"], idle)
        yield held
        yield GaugeMetricFamily("wedsync_db_pool_max", "Most connections the pool may hold.", value=stats["pool_max"])
        waiting = stats.get("requests_waiting", 0)
        yield GaugeMetricFamily("wedsync_db_pool_waiting", "Database hops waiting for a connection now.", value=waiting)
        yield CounterMetricFamily(
            "wedsync_db_pool_timeouts",
            "Database hops that found no free connection within DATABASE_POOL_TIMEOUT.",
            value=stats.get("requests_errors", 0),
        )
        yield CounterMetricFamily(
            "wedsync_db_pool_wait_seconds",
            "Time database hops spent waiting for a connection.",
            value=stats.get("requests_wait_ms", 0) / 1000,
        )


REGISTRY.register(DatabasePoolCollector())
