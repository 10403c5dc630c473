"""Reads about the health of this process and what it depends on, and what must be escalated."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import msgspec
import redis
import structlog
from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from monitoring.capacity import DayForecast, WeddingLoad, capacity_forecast, wedding_load
from monitoring.metrics import READINESS_FAILURES
from monitoring.models import Escalation, EscalationStatus, EventWebhook
from monitoring.node_reports import NodeReport, RegistryUnavailable, node_report_decode, registry_client
from presence.models import Alert, AlertSeverity, Emergency
from realtime.models import Event, EventAck, WeddingStream
from realtime.names import EMERGENCY_REPEAT_FIELD, EventType
from realtime.node.hub import node_database_failed, node_database_problem, node_drain_problem, node_hubs_problem
from wedsync.models import Member, Wedding, WeddingStatus
from wedsync.permissions import Role
from wedsync.redis_clients import redis_client
from wedsync.redis_keys import NODE_REGISTRY, node_report_key

logger = structlog.get_logger(__name__)

_PROBE_TIMEOUT = 1.0
# Connections a process's readiness probes may hold to one Redis: concurrent probes wait for one
# (up to the timeout) instead of opening more.
_PROBE_CONNECTIONS = 2
_probe_clients: dict[str, redis.Redis] = {}
_probe_clients_lock = threading.Lock()


def _database_problem() -> str | None:
    # While the node's hubs know it is away, say so at once: the pool would wait its whole timeout
    # for a connection, longer than a load balancer's check waits for the answer.
    known = node_database_problem()
    if known is not None:
        return known
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"; the message says which
        node_database_failed()
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def _probe_client(address: str) -> redis.Redis:
    """One client per Redis address per process, on a small blocking pool: a probe reuses a
    connection instead of opening one per hit (redis-py's pools are thread-safe and reopen after a
    fork)."""
    with _probe_clients_lock:
        client = _probe_clients.get(address)
        if client is None:
            pool = redis.BlockingConnectionPool.from_url(
                address,
                max_connections=_PROBE_CONNECTIONS,
                timeout=_PROBE_TIMEOUT,
                socket_connect_timeout=_PROBE_TIMEOUT,
                socket_timeout=_PROBE_TIMEOUT,
            )
            client = _probe_clients[address] = redis.Redis(connection_pool=pool)
        return client


@functools.cache
def _sentinel_probe_client() -> redis.Redis:
    """The master the sentinels name (wedsync/redis_clients.py), asked again after a failover."""
    return redis_client(socket_timeout=_PROBE_TIMEOUT)


def _channel_layer_problem() -> str | None:
    layer: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    for host in layer.get("CONFIG", {}).get("hosts", []):
        try:
            if isinstance(host, dict) and "sentinels" in host:
                _sentinel_probe_client().ping()
            else:
                _probe_client(host["address"] if isinstance(host, dict) else host).ping()
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}".strip()
    return None


_CHECKS: dict[str, Callable[[], str | None]] = {
    "database": _database_problem,
    "channel_layer": _channel_layer_problem,
    # A socket node is ready once its hub runs (joined the channel layer): until then it refuses
    # sockets with 1013, and the load balancer must not send it any.
    "socket_hub": node_hubs_problem,
    # An operator's drain (monitoring/node_reports.py): not ready on purpose, so not counted as a failure.
    "drain": node_drain_problem,
}
_NOT_FAILURES = frozenset({"drain"})


def readiness_report() -> dict[str, str | None]:
    """``component -> None`` when it answers, else what is wrong with it (for the log, not the public)."""
    report: dict[str, str | None] = {}
    for component, check in _CHECKS.items():
        problem = check()
        if problem is not None and component not in _NOT_FAILURES:
            READINESS_FAILURES.labels(component=component).inc()
            logger.warning("readiness.down", component=component, problem=problem)
        report[component] = problem
    return report


# --- Escalation: what nobody acknowledged in time (monitoring/services/escalation.py) ---------------


def _planner_ack_of(event_field: str) -> Exists:
    """A planner of the event's own wedding acknowledged it (the ``ack`` op)."""
    return Exists(
        EventAck.objects.filter(
            event_id=OuterRef(event_field), member__role=Role.PLANNER, member__wedding_id=OuterRef("wedding_id")
        )
    )


def alerts_due_for_escalation(*, raised_before: datetime, raised_after: datetime) -> QuerySet[Alert]:
    """Open critical alerts raised in ``(raised_after, raised_before]`` that nobody acknowledged
    (neither on the alert nor by a planner's ``ack`` of its ``alert.raised`` event) and that were
    not escalated yet."""
    return (
        Alert.objects.filter(
            severity=AlertSeverity.CRITICAL,
            resolved_at__isnull=True,
            acknowledged_at__isnull=True,
            raised_at__gt=raised_after,
            raised_at__lte=raised_before,
        )
        .exclude(_planner_ack_of("raised_event_id"))
        .exclude(Exists(Escalation.objects.filter(alert_id=OuterRef("pk"))))
        .select_related("wedding", "member__user")
        .order_by("raised_at", "pk")
    )


def emergencies_due_for_escalation(*, created_before: datetime, created_after: datetime) -> QuerySet[Event]:
    """``emergency.alert`` events published in ``(created_after, created_before]`` that no planner of
    the wedding acknowledged, that were not resolved, and that were not escalated yet. A repeat of
    an open emergency is not escalated: the alarm it updates is (decision 0011)."""
    return (
        Event.objects.filter(
            type=EventType.EMERGENCY_ALERT.value, created_at__gt=created_after, created_at__lte=created_before
        )
        .exclude(data__has_key=EMERGENCY_REPEAT_FIELD)
        .exclude(_planner_ack_of("pk"))
        .exclude(Exists(Emergency.objects.filter(raised_event_id=OuterRef("pk"), resolved_at__isnull=False)))
        .exclude(Exists(Escalation.objects.filter(event_id=OuterRef("pk"))))
        .select_related("wedding", "sender_member__user")
        .order_by("created_at", "pk")
    )


def wedding_planners(*, wedding_id: int) -> list[Member]:
    """The people who should have acknowledged: the wedding's active planners."""
    return list(Member.objects.filter(wedding_id=wedding_id, role=Role.PLANNER, is_active=True).select_related("user"))


def escalations_stalled(*, due_before: datetime) -> QuerySet[Escalation]:
    """Pending escalations whose next attempt was due before ``due_before`` and never came (a lost
    broker message, a worker that died mid-attempt)."""
    return Escalation.objects.filter(status=EscalationStatus.PENDING, next_attempt_at__lt=due_before)


# --- Event webhooks (monitoring/services/event_webhooks/, decision 0032) -------------------------


def event_webhooks_of(*, account_id: int, wedding_id: int) -> QuerySet[EventWebhook]:
    """A service account's subscriptions to one wedding, oldest first."""
    return EventWebhook.objects.filter(service_account_id=account_id, wedding_id=wedding_id).order_by("pk")


def event_webhook_of(*, account_id: int, wedding_id: int, webhook_id: int) -> EventWebhook | None:
    """One of the account's subscriptions to the wedding; None for another account's, another
    wedding's or one that does not exist, alike."""
    return event_webhooks_of(account_id=account_id, wedding_id=wedding_id).filter(pk=webhook_id).first()


def event_webhooks_due(*, now: datetime) -> QuerySet[EventWebhook]:
    """Active subscriptions a delivery task should look at now: a batch waiting for its next attempt,
    or events after their cursor (the wedding's stream is ahead of it), and not held by a task
    (``next_attempt_at`` in the future). Those waiting longest first."""
    ahead = Exists(
        WeddingStream.objects.filter(wedding_id=OuterRef("wedding_id"), last_seq__gt=OuterRef("last_delivered_seq"))
    )
    return (
        EventWebhook.objects.filter(is_active=True)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(delivery_id__isnull=False) | ahead)
        .order_by(F("next_attempt_at").asc(nulls_first=True), "pk")
    )


# --- The node registry (monitoring/node_reports.py) ---------------------------------------------------


def nodes_reported(*, client: redis.Redis | None = None) -> list[NodeReport]:
    """The nodes whose last report has not expired, by name; none without Redis (one process, no
    fleet); :class:`RegistryUnavailable` when Redis does not answer. A report another release wrote
    in a shape this one cannot read is logged and skipped."""
    client = client if client is not None else registry_client()
    if client is None:
        return []
    try:
        names = sorted(name.decode() for name in client.zrange(NODE_REGISTRY, 0, -1))  # type: ignore[union-attr]
        raws = client.mget([node_report_key(node=name) for name in names]) if names else []
    except redis.RedisError as error:
        logger.warning("nodes.registry_unavailable", error=str(error))
        raise RegistryUnavailable("Redis, where the nodes report, did not answer.") from error
    reports = []
    for name, raw in zip(names, raws, strict=True):
        if raw is None:  # expired: the node stopped reporting
            continue
        try:
            reports.append(node_report_decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError):
            logger.warning("nodes.report_unreadable", node=name)
    return reports


def wedding_loads_between(*, start: datetime, end: datetime) -> list[WeddingLoad]:
    """The load of every wedding whose peak window may touch [start, end): not cancelled, not
    archived, with active members, counted by role (one grouped query)."""
    margin = timedelta(hours=max(settings.CAPACITY_PEAK_BEFORE_HOURS, settings.CAPACITY_PEAK_AFTER_HOURS))
    weddings = dict(
        Wedding.objects.filter(
            ceremony_at__gte=start - margin,
            ceremony_at__lt=end + margin,
            archived_at__isnull=True,
        )
        .exclude(status=WeddingStatus.CANCELLED)
        .values_list("pk", "ceremony_at")
    )
    counts: dict[int, dict[str, int]] = {wedding_id: {} for wedding_id in weddings}
    rows = (
        Member.objects.filter(wedding_id__in=weddings, is_active=True)
        .values_list("wedding_id", "role")
        .annotate(count=Count("pk"))
        .order_by()
    )
    for wedding_id, role, count in rows:
        counts[wedding_id][role] = count
    return [
        wedding_load(wedding_id=wedding_id, ceremony_at=ceremony_at, members_by_role=counts[wedding_id])
        for wedding_id, ceremony_at in sorted(weddings.items())
        if counts[wedding_id]  # nobody left in it: nobody to connect
    ]


FORECAST_DAYS = 14


def forecast_from_today() -> list[DayForecast]:
    """The next ``FORECAST_DAYS`` UTC days' capacity forecast from the wedding calendar."""
    today = timezone.now().astimezone(UTC).date()
    start = datetime.combine(today, time(0), tzinfo=UTC)
    loads = wedding_loads_between(start=start, end=start + timedelta(days=FORECAST_DAYS))
    return capacity_forecast(loads=loads, today=today, days=FORECAST_DAYS)
