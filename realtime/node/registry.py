"""The node's reports into the registry (monitoring/node_reports.py): every
``REALTIME_NODE_REPORT_SECONDS`` what it holds (sockets, subscriptions by role, weddings) and how it
fares (CPU, memory, the event loop's lateness), kept for three intervals. Each report also hears
whether an operator asks the node to drain; while it does, the node closes its sockets with 1001,
``REALTIME_DRAIN_SOCKETS_PER_SECOND`` a second, so the other nodes take them gradually."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis
import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from prometheus_client import Gauge, Histogram

from monitoring.metrics import (
    DELIVERY_LATENCY,
    EVENT_LOOP_LAG,
    NODE_DRAINING,
    PRESENCE_LATENCY,
    SOCKET_CLOSES,
    SOCKETS_OPEN,
    SUBSCRIPTIONS_OPEN,
    WEDDINGS_HELD,
)
from monitoring.node_reports import REPORT_TTL_INTERVALS, NodeReport
from monitoring.services.nodes import node_report_write
from realtime.node.feed import WeddingFeed
from realtime.node.socket import Socket
from wedsync.permissions import Role

logger = structlog.get_logger(__name__)

LAG_TICK_SECONDS = 0.25  # how often the loop's lateness is sampled between reports


class Node(Protocol):
    """What a report reads of the node hub."""

    feeds: dict[int, WeddingFeed]
    sockets: dict[str, Socket]
    draining: bool


class ProcessSample:
    """This process's CPU between two reports, and the event loop's worst lateness meanwhile."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.monotonic()
        self.worst_lag = 0.0

    def lag_seen(self, lag: float) -> None:
        self.worst_lag = max(self.worst_lag, lag)

    def take(self) -> tuple[float, float]:
        """(CPU percent of one core, worst lag in ms) since the last take; starts the next interval."""
        cpu, wall = time.process_time(), time.monotonic()
        percent = 100.0 * (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        lag_ms = self.worst_lag * 1000
        self._cpu, self._wall, self.worst_lag = cpu, wall, 0.0
        return round(percent, 1), round(lag_ms, 1)


def rss_bytes() -> int:
    """The process's resident memory now (Linux's /proc); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def socket_role(*, roles: list[str], observer: bool) -> str:
    """What a socket's memberships make it, as the node's metrics count sockets: their one role,
    ``several`` when they differ, ``observer`` for staff watching, ``none`` without any."""
    if observer:
        return "observer"
    distinct = set(roles)
    if len(distinct) > 1:
        return "several"
    return distinct.pop() if distinct else "none"


@dataclass(frozen=True, slots=True)
class MinuteWindows:
    """What a report reads over about the last minute, from this process's metrics."""

    delivery: LatencyWindow
    presence: LatencyWindow
    error_closes: CounterWindow

    @classmethod
    def every(cls, seconds: float) -> MinuteWindows:
        reports = round(60 / seconds)
        return cls(
            delivery=LatencyWindow(histogram=DELIVERY_LATENCY, reports_per_minute=reports),
            presence=LatencyWindow(histogram=PRESENCE_LATENCY, reports_per_minute=reports),
            error_closes=CounterWindow(read=_server_error_closes, reports_per_minute=reports),
        )


def node_report(hub: Node, *, started_at: float, sample: ProcessSample, windows: MinuteWindows) -> NodeReport:
    roles: collections.Counter[str] = collections.Counter()
    for feed in hub.feeds.values():
        # A subscription attached ahead of its access check has no role yet: counted once checked.
        roles.update(subscription.role for subscription in feed.subscriptions.values() if subscription.confirmed)
    socket_roles = collections.Counter(socket.role for socket in hub.sockets.values())
    cpu_percent, loop_lag_ms = sample.take()
    weddings = sum(1 for feed in hub.feeds.values() if feed.subscriptions)
    _gauges_set(SOCKETS_OPEN, socket_roles)
    _gauges_set(SUBSCRIPTIONS_OPEN, roles)
    WEDDINGS_HELD.set(weddings)
    EVENT_LOOP_LAG.set(loop_lag_ms / 1000)
    NODE_DRAINING.set(int(hub.draining))
    return NodeReport(
        name=settings.REALTIME_NODE_NAME,
        version=settings.WEDSYNC_VERSION,
        started_at=started_at,
        reported_at=time.time(),
        sockets=len(hub.sockets),
        subscriptions_by_role=dict(sorted(roles.items())),
        weddings=weddings,
        cpu_percent=cpu_percent,
        rss_bytes=rss_bytes(),
        loop_lag_ms=loop_lag_ms,
        draining=hub.draining,
        delivery_p99_ms=windows.delivery.p99_ms(),
        presence_p99_ms=windows.presence.p99_ms(),
        error_closes_last_minute=windows.error_closes.increase(),
    )


_GAUGE_ROLES = (*(role.value for role in Role), "several", "observer", "none")


def _gauges_set(gauge: Gauge, counts: collections.Counter[str]) -> None:
    """Set every role's series, zero included, so a role whose last socket left reads 0, not its last count."""
    for role in _GAUGE_ROLES:
        gauge.labels(role).set(counts.get(role, 0))


class LatencyWindow:
    """A latency histogram's 99th percentile over about the last minute, from its cumulative
    buckets: a snapshot each report, the newest minus the one a minute before."""

    def __init__(self, *, histogram: Histogram, reports_per_minute: int) -> None:
        self._histogram = histogram
        self._snapshots: collections.deque[list[tuple[float, float]]] = collections.deque(
            maxlen=max(reports_per_minute, 1) + 1
        )

    def p99_ms(self) -> float | None:
        self._snapshots.append(_bucket_counts(self._histogram))
        oldest, newest = self._snapshots[0], self._snapshots[-1]
        if len(self._snapshots) == 1:
            oldest = [(bound, 0.0) for bound, _ in newest]
        delta = [(bound, count - before) for (bound, count), (_, before) in zip(newest, oldest, strict=True)]
        seconds = bucket_quantile(0.99, delta)
        return None if seconds is None else round(seconds * 1000, 1)


def _server_error_closes() -> float:
    return sum(
        sample.value
        for metric in SOCKET_CLOSES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("code") == "server_error"
    )


class CounterWindow:
    """A counter's increase over about the last minute: a reading each report, newest minus the
    one a minute before."""

    def __init__(self, *, read: Callable[[], float], reports_per_minute: int) -> None:
        self._read = read
        self._readings: collections.deque[float] = collections.deque(maxlen=max(reports_per_minute, 1) + 1)

    def increase(self) -> int:
        self._readings.append(self._read())
        return round(self._readings[-1] - self._readings[0]) if len(self._readings) > 1 else 0


def _bucket_counts(histogram: Histogram) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of each bucket, ``+Inf`` last, as a scrape would read them."""
    return [
        (float(sample.labels["le"]), sample.value)
        for metric in histogram.collect()
        for sample in metric.samples
        if sample.name.endswith("_bucket")
    ]


def bucket_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile``: the bucket the rank falls in, interpolated linearly
    (the last finite bound when it falls past it); None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


class DrainPace:
    """How many sockets a draining node tells to go at each tick: ``per_second`` on average, the
    fractions carried over, so a low rate is kept too (1 a second at 4 ticks a second: one in four)."""

    def __init__(self, *, per_second: float) -> None:
        self.per_second = per_second
        self._owed = 0.0

    def take(self, *, seconds: float) -> int:
        self._owed += self.per_second * seconds
        whole = int(self._owed)
        self._owed -= whole
        return whole


def drain_slice(hub: Node, *, count: int, told: set[str]) -> None:
    """Tell up to ``count`` of the node's open sockets that were not told yet to go (1001), adding
    them to ``told``; a told socket leaves ``hub.sockets`` once its close completes."""
    told.intersection_update(hub.sockets)
    for connection_id, socket in list(hub.sockets.items()):
        if count <= 0:
            break
        if connection_id not in told:
            told.add(connection_id)
            socket.going_away()
            count -= 1


async def report_loop(hub: Node, *, client: redis.Redis, every: float) -> None:
    """Report every ``every`` seconds, sampling the loop's lateness in between; a failed write is
    logged, and the report after it (three chances before the entry expires) tries again."""
    loop = asyncio.get_running_loop()
    started_at, sample, told = time.time(), ProcessSample(), set[str]()
    windows = MinuteWindows.every(every)
    pace = DrainPace(per_second=settings.REALTIME_DRAIN_SOCKETS_PER_SECOND)
    failing = False
    tick = min(LAG_TICK_SECONDS, every)
    next_report = loop.time()
    while True:
        if loop.time() >= next_report:
            next_report = loop.time() + every
            report = node_report(hub, started_at=started_at, sample=sample, windows=windows)
            try:
                drain_asked = await sync_to_async(node_report_write, thread_sensitive=False)(
                    client=client, report=report, ttl=every * REPORT_TTL_INTERVALS
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the registry shows the node again once it is back
                if not failing:  # once per outage, not every interval
                    logger.exception("node.report_failed")
                failing = True
            else:
                if failing:
                    logger.info("node.report_resumed")
                failing = False
                if drain_asked != hub.draining:
                    logger.info("node.drain" if drain_asked else "node.resume", sockets=len(hub.sockets))
                    hub.draining = drain_asked
                    told.clear()
        if hub.draining:
            drain_slice(hub, count=pace.take(seconds=tick), told=told)
        asked = loop.time()
        await asyncio.sleep(tick)
        sample.lag_seen(max(0.0, loop.time() - asked - tick))
