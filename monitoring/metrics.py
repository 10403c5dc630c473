"""Every Prometheus metric the service exports, declared once, with bounded label values.

Label values come from closed sets (enums, fixed component names), never from user input, so
the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
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


# --- The socket path, from every daphne node (docs/operations.md: "What each metric means") ---------

SOCKETS_OPEN = Gauge(
    "wedsync_sockets_open",
    "Sockets open on this node, by role: the role its memberships share, several (a member of weddings "
    "in different roles), observer (staff watching the board) or none. Set with each node report.",
    ["role"],
)

SUBSCRIPTIONS_OPEN = Gauge(
    "wedsync_subscriptions_open",
    "Wedding subscriptions held on this node, by the subscriber's role there. Set with each node report.",
    ["role"],
)

WEDDINGS_HELD = Gauge(
    "wedsync_weddings_held", "Weddings with at least one subscriber on this node. Set with each node report."
)

SOCKET_CONNECTS = Counter(
    "wedsync_socket_connects_total",
    "Socket handshakes by outcome: accepted, or refused with its close code's name (try_again: not ready "
    "or too many from one address, or shed; going_away: draining; unauthorized; forbidden; devices).",
    ["outcome"],
)

SOCKETS_SHED = Counter(
    "wedsync_sockets_shed_total",
    "New sockets a loaded node refused (1013, retry_after) by who they were (tier: guest, vendor) and why "
    "(cause: budget, the node's open sockets and those being let in; loop_lag, its event loop running late); "
    "plus urgent ones "
    "closed for raising no emergency within their grace (cause: urgent_unused).",
    ["tier", "cause"],
)

SOCKET_CLOSES = Counter(
    "wedsync_socket_closes_total",
    "Sockets closed after they were accepted, by close code name (normal, going_away, server_error, slow, "
    "violations, unauthorized, devices, too_large, binary, try_again, no_status, abnormal, other).",
    ["code"],
)

SOCKET_CUTOFFS = Counter(
    "wedsync_socket_cutoffs_total",
    "Sockets closed 4008 for not keeping up, by where they fell behind: outbox (live events past the "
    "outbox's bound) or replay (live events held past their bound while a replay was sent).",
    ["where"],
)

EVENTS_PUBLISHED = Counter(
    "wedsync_events_published_total",
    "Events stored and committed, by type and priority (counted after commit, on the publishing process).",
    ["type", "priority"],
)

EVENT_DELIVERIES = Counter(
    "wedsync_event_deliveries_total",
    "Event frames handed to this node's sockets (one event to 200 sockets counts 200); replays excluded.",
)

FANOUT_SIZE = Histogram(
    "wedsync_fanout_sockets",
    "Sockets on this node one live event went to.",
    buckets=(0, 1, 5, 10, 25, 50, 100, 200, 500, 1000, 2500, 5000, 10000),
)

DELIVERY_LATENCY = Histogram(
    "wedsync_delivery_latency_seconds",
    "From an event's commit to its frames handed to this node's writable sockets, once per event per "
    "node (a slow reader's queued frame is not waited for). Spans processes: needs synchronised clocks.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

REPLAY_EVENTS = Histogram(
    "wedsync_replay_events",
    "Events replayed to one subscription (0 for a fresh subscribe or one already up to date).",
    buckets=(0, 1, 10, 50, 100, 500, 1000, 5000, 10000),
)

FEED_GAPS_REPAIRED = Counter(
    "wedsync_feed_gaps_repaired_total",
    "Gaps in a wedding's events a node read back from the log, by how it noticed: seq (a later event "
    "skipped ahead) or head (the heads poll saw a stream past the feed).",
    ["by"],
)

FEED_INBOX_DROPPED = Counter(
    "wedsync_feed_inbox_dropped_total",
    "Layer messages a wedding feed's full inbox dropped (read back from the log as gaps).",
)

RATE_LIMIT_REFUSALS = Counter(
    "wedsync_rate_limit_refusals_total",
    "Socket ops answered rate_limited, by op (a client past its budget or a member past the publish cap).",
    ["op"],
)

MEMBER_CACHE_LOOKUPS = Counter(
    "wedsync_member_cache_lookups_total",
    "Publish and sync ops' membership reads on this node, by outcome: hit (from the node's cache), miss "
    "(read from PostgreSQL).",
    ["outcome"],
)

MEMBER_CACHE_INVALIDATIONS = Counter(
    "wedsync_member_cache_invalidations_total",
    "Times this node dropped cached memberships, by source: control (a member change told every node), "
    "access_check (the node's own check found a change a lost message did not bring).",
    ["source"],
)

PRESENCE_CHANGES = Counter(
    "wedsync_presence_changes_total",
    "Presence changes this node told every node, by kind: joins, leaves, updates.",
    ["kind"],
)

PRESENCE_LATENCY = Histogram(
    "wedsync_presence_latency_seconds",
    "From a member's presence change to its diff reaching a node that shows it. Needs synchronised clocks.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
)

RECORD_SYNC_OUTCOMES = Counter(
    "wedsync_record_sync_ops_total",
    "Shared-record sync ops, by outcome: applied, merged, overridden (the record's values kept), conflict "
    "(kept for a person to resolve, or an atomic batch refused for one), duplicate (an op_id answered "
    "before), refused (invalid or not allowed; a refused batch counts once).",
    ["outcome"],
)

EVENT_LOOP_LAG = Gauge(
    "wedsync_event_loop_lag_seconds",
    "The event loop's worst lateness over the last node report interval.",
)

THREAD_POOL_QUEUE = Gauge(
    "wedsync_thread_pool_queued",
    "Database and Redis hops waiting for one of the node's threads (REALTIME_THREAD_POOL), at scrape time.",
)

NODE_DRAINING = Gauge("wedsync_node_draining", "1 while an operator drains this node.")


# --- Beat's checks of the service (monitoring/services/ops_checks.py) --------------------------------

OPS_ALERTS_RAISED = Counter(
    "wedsync_ops_alerts_raised_total",
    "Operations alerts beat raised, by check and severity (critical ones go to the escalation webhook).",
    ["check", "severity"],
)

OPS_ALERTS_OPEN = Gauge(
    "wedsync_ops_alerts_open",
    "Operations alerts open now, by check (set by the worker after each run of the checks).",
    ["check"],
)


# --- The capacity forecast (monitoring/capacity.py), set by the worker with each run of the checks --
# ``day`` is days from today (UTC), "0" to "13": a closed set.

CAPACITY_FORECAST_SOCKETS = Gauge(
    "wedsync_capacity_forecast_sockets", "Forecast concurrent sockets in the day's busiest hour.", ["day"]
)
CAPACITY_FORECAST_EVENTS = Gauge(
    "wedsync_capacity_forecast_events_per_second", "Forecast events published per second in that hour.", ["day"]
)
CAPACITY_FORECAST_DELIVERIES = Gauge(
    "wedsync_capacity_forecast_deliveries_per_second", "Forecast deliveries per second in that hour.", ["day"]
)
CAPACITY_RECOMMENDED_NODES = Gauge(
    "wedsync_capacity_recommended_nodes",
    "Nodes the day's busiest hour needs at the per-node capacities, spare included (day 0: today, for an autoscaler).",
    ["day"],
)
CAPACITY_REGISTERED_NODES = Gauge(
    "wedsync_capacity_registered_nodes", "Nodes serving now: reporting into the registry and not draining."
)


# --- Celery worker and beat ------------------------------------------------------------------------

TASK_RUNS = Counter(
    "wedsync_task_runs_total",
    "Celery task runs by task (our tasks by name; anything else as other) and outcome: succeeded, failed, retried.",
    ["task", "outcome"],
)

TASK_DURATION = Histogram(
    "wedsync_task_duration_seconds",
    "Celery task run time, by task.",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class DatabasePoolCollector(Collector):
    """This process's PostgreSQL connection pool, read from psycopg's counters at each scrape: how
    many connections it holds (in use, idle) of its maximum, how many hops wait for one, and how
    many gave up waiting (docs/operations.md: what to do when they do)."""

    def describe(self) -> Iterator[Metric]:
        """The families it exports, without values: nothing is read before Django is set up."""
        yield GaugeMetricFamily("wedsync_db_pool_connections", "", labels=["state"])
        yield GaugeMetricFamily("wedsync_db_pool_max", "")
        yield GaugeMetricFamily("wedsync_db_pool_waiting", "")
        yield CounterMetricFamily("wedsync_db_pool_timeouts", "")
        yield CounterMetricFamily("wedsync_db_pool_wait_seconds", "")

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


DATABASE_POOL = DatabasePoolCollector()
REGISTRY.register(DATABASE_POOL)
