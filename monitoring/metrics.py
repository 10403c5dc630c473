"""Every Prometheus metric the service exports, declared once, with bounded label values.

Label values come from closed sets (enums, fixed component names), never from user input, so
the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from prometheus_client import Counter

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
