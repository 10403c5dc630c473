"""What beat's checks observe (monitoring/services/ops_checks.py): the node registry's reports (each
node's delivery and presence p99 and its 1011 closes over the last minute), the nodes that stopped
reporting without being drained, and Redis's, PostgreSQL's and the Celery queue's own answers."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import redis
import structlog
from django.conf import settings
from django.db import connection

from monitoring.capacity import DayForecast
from monitoring.models import OpsCheck
from monitoring.node_reports import NodeReport, RegistryUnavailable
from monitoring.selectors import forecast_from_today, nodes_reported
from monitoring.services.ops_checks import Observation, ObservationRound
from wedsync.redis_keys import NODE_REGISTRY, node_drain_key, node_report_key

logger = structlog.get_logger(__name__)

PROBES = 3  # round trips per latency probe; the median is kept, so one hiccup is not a breach
CELERY_QUEUE = "celery"  # the default queue's list on a Redis broker


def ops_observations(*, client: redis.Redis | None) -> ObservationRound:
    """This run's observations. Without Redis (embedded mode) there is no fleet and no broker to
    ask; with Redis away the fleet is unknown: its checks keep their clocks until it is read again."""
    observations = [_database_latency()]
    if client is None:
        return ObservationRound(observations, covered=frozenset())
    observations.append(_redis_latency(client))
    try:
        reports = nodes_reported(client=client)
        silent = nodes_silent(client=client)
        on_redis = settings.CELERY_BROKER_URL.startswith("redis")
        backlog = int(client.llen(CELERY_QUEUE)) if on_redis else None
    except (RegistryUnavailable, redis.RedisError):
        return ObservationRound(observations, covered=frozenset())  # the Redis probe says it did not answer
    for report in reports:
        observations.extend(_node_observations(report))
    for name in silent:
        observations.append(
            Observation(
                check=OpsCheck.NODE_MISSING,
                subject=name,
                value=1.0,
                threshold=0.5,
                message=f"{name} stopped reporting and was not drained first",
            )
        )
    for report in reports:  # back, or never gone: heals its missing check
        observations.append(
            Observation(check=OpsCheck.NODE_MISSING, subject=report.name, value=0.0, threshold=0.5, message="")
        )
    if backlog is not None:
        bound = settings.OPS_TASK_BACKLOG
        observations.append(
            Observation(
                check=OpsCheck.TASK_BACKLOG,
                subject="",
                value=float(backlog),
                threshold=float(bound),
                message=f"{backlog} Celery tasks wait in the queue (bound {bound}): the worker is behind or down",
            )
        )
    forecast = forecast_from_today()
    serving = sum(1 for report in reports if not report.draining)
    if serving:  # no node serving at all is the missing-node check's to say
        observations.extend(capacity_observations(forecast=forecast, registered=serving))
    return ObservationRound(observations, covered=FLEET_CHECKS, forecast=forecast, registered=serving)


FLEET_CHECKS = frozenset(
    {
        OpsCheck.DELIVERY_LATENCY,
        OpsCheck.PRESENCE_LATENCY,
        OpsCheck.ERROR_CLOSES,
        OpsCheck.NODE_MISSING,
        OpsCheck.CAPACITY,
    }
)


def capacity_observations(*, forecast: list[DayForecast], registered: int) -> list[Observation]:
    """Tomorrow's and the coming Saturday's (today's, on a Saturday) nodes against those serving
    (reporting and not draining); a day without a wedding needs nothing of the fleet."""
    watched = [forecast[1]] if len(forecast) > 1 else []
    saturday = next((day for day in forecast[:7] if day.is_saturday), None)
    if saturday is not None and saturday not in watched:
        watched.append(saturday)
    watched = [day for day in watched if day.weddings]
    found = []
    for day in watched:
        peak = "no wedding" if day.peak_at is None else f"{day.peak_at:%H:%M} UTC"
        found.append(
            Observation(
                check=OpsCheck.CAPACITY,
                subject=day.day.isoformat(),
                value=float(day.nodes),
                threshold=float(registered),
                message=(
                    f"{day.day:%A %Y-%m-%d}: {day.weddings} weddings at {peak}, {day.sockets} sockets and "
                    f"{day.deliveries_per_second} deliveries/s, need {day.nodes} nodes (spare included); "
                    f"{registered} serve now"
                ),
            )
        )
    return found


def nodes_silent(*, client: redis.Redis) -> list[str]:
    """Names in the registry's index whose report expired within ``OPS_NODE_FORGET_SECONDS`` and
    that no operator drained: nodes that stopped without saying so. A drained node is expected to
    go; one silent for longer is forgotten (a node named by host and PID never comes back)."""
    since = time.time() - settings.OPS_NODE_FORGET_SECONDS
    names = sorted(name.decode() for name in client.zrangebyscore(NODE_REGISTRY, since, "+inf"))  # type: ignore[union-attr]
    if not names:
        return []
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(node_report_key(node=name))
            pipe.exists(node_drain_key(node=name))
        answers = pipe.execute()
    return [
        name
        for name, reported, drained in zip(names, answers[0::2], answers[1::2], strict=True)
        if not reported and not drained
    ]


def _node_observations(report: NodeReport) -> list[Observation]:
    name, found = report.name, []
    p99s = (
        (OpsCheck.DELIVERY_LATENCY, "delivery", report.delivery_p99_ms, settings.OPS_DELIVERY_P99_MS),
        (OpsCheck.PRESENCE_LATENCY, "presence", report.presence_p99_ms, settings.OPS_PRESENCE_P99_MS),
    )
    for check, what, p99, bound in p99s:
        if p99 is not None:  # None: nothing delivered (shown) there in the last minute
            message = f"{what} p99 {p99:g} ms over the last minute (SLO {bound:g} ms)"
            found.append(Observation(check=check, subject=name, value=p99, threshold=bound, message=message))
    bound = settings.OPS_ERROR_CLOSES_PER_MINUTE
    found.append(
        Observation(
            check=OpsCheck.ERROR_CLOSES,
            subject=name,
            value=float(report.error_closes_last_minute),
            threshold=bound,
            message=f"{report.error_closes_last_minute} sockets closed 1011 in the last minute (bound {bound:g})",
        )
    )
    return found


def _median_ms(probe: Callable[[], object]) -> float:
    """The median time of ``PROBES`` calls, in ms; infinite when one fails."""
    times = []
    for _ in range(PROBES):
        started = time.perf_counter()
        try:
            probe()
        except Exception as error:  # the thing did not answer: that is the observation
            logger.warning("ops.probe_failed", error=repr(error))
            return math.inf
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _redis_latency(client: redis.Redis) -> Observation:
    bound = settings.OPS_REDIS_LATENCY_MS
    value = _median_ms(client.ping)
    said = "did not answer" if math.isinf(value) else f"answers a PING in {value:.1f} ms"
    return Observation(
        check=OpsCheck.REDIS_LATENCY,
        subject="",
        value=value,
        threshold=bound,
        message=f"Redis {said} (bound {bound:g} ms)",
    )


def _database_latency() -> Observation:
    bound = settings.OPS_DATABASE_LATENCY_MS

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    value = _median_ms(select_one)
    said = "did not answer" if math.isinf(value) else f"answers SELECT 1 in {value:.1f} ms"
    return Observation(
        check=OpsCheck.DATABASE_LATENCY,
        subject="",
        value=value,
        threshold=bound,
        message=f"PostgreSQL {said} (bound {bound:g} ms)",
    )
