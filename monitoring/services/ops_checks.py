"""Beat's checks of the service itself (issue 21, decision 0037): each run turns observations (a
node's delivery p99, Redis's latency, ...) into raised and resolved :class:`OpsAlert` rows.

Hysteresis, so that a value hovering at its threshold does not flap: a check is raised only after
breaching (value above its threshold) for its rule's ``raise_after``, and resolved only after
being healthy (value at or below ``CLEAR_RATIO`` of its threshold) for ``resolve_after``. A value
between the two stops both clocks (each starts again from its next observation), and so does a gap
of more than ``STALE_RUNS`` runs without an observation (the worker was down: what it did not see
is not counted as breaching or healthy). A subject with no observation in a run (a node that left the
registry) counts as healthy when the fleet was read: the node-missing check speaks for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count

from monitoring.capacity import DayForecast
from monitoring.metrics import (
    CAPACITY_FORECAST_DELIVERIES,
    CAPACITY_FORECAST_EVENTS,
    CAPACITY_FORECAST_SOCKETS,
    CAPACITY_RECOMMENDED_NODES,
    CAPACITY_REGISTERED_NODES,
    OPS_ALERTS_OPEN,
    OPS_ALERTS_RAISED,
)
from monitoring.models import OpsAlert, OpsAlertStatus, OpsCheck, OpsCheckState, OpsSeverity
from monitoring.services.escalation import escalation_create

logger = structlog.get_logger(__name__)

CLEAR_RATIO = 0.8  # healthy again only at or below this share of the threshold
STALE_RUNS = 3  # an observation after more runs' silence than this starts both clocks afresh


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of one check for one subject (a node's name, or "" for the whole service)."""

    check: OpsCheck
    subject: str
    value: float  # math.inf when the thing measured did not answer
    threshold: float
    message: str  # what an operator reads, with the value and the bound


@dataclass(frozen=True, slots=True)
class CheckRule:
    severity: OpsSeverity
    raise_after: timedelta
    resolve_after: timedelta
    clear_ratio: float = CLEAR_RATIO  # healthy at or below this share of the threshold


def ops_check_rules() -> dict[OpsCheck, CheckRule]:
    """How long each check must breach before it is raised, and be healthy before it is resolved."""
    slo = timedelta(seconds=settings.OPS_SLO_WINDOW_SECONDS)  # "p99 over 100 ms over 5 minutes"
    quick = timedelta(seconds=settings.OPS_QUICK_WINDOW_SECONDS)
    return {
        OpsCheck.DELIVERY_LATENCY: CheckRule(OpsSeverity.CRITICAL, slo, slo),
        OpsCheck.PRESENCE_LATENCY: CheckRule(OpsSeverity.WARNING, slo, slo),
        OpsCheck.ERROR_CLOSES: CheckRule(OpsSeverity.CRITICAL, slo, slo),
        OpsCheck.NODE_MISSING: CheckRule(OpsSeverity.CRITICAL, quick, quick),
        OpsCheck.REDIS_LATENCY: CheckRule(OpsSeverity.WARNING, quick, slo),
        OpsCheck.DATABASE_LATENCY: CheckRule(OpsSeverity.WARNING, quick, slo),
        OpsCheck.TASK_BACKLOG: CheckRule(OpsSeverity.WARNING, quick, slo),
        # Nodes are whole: a forecast that needs the nodes there are is healthy, not "in the band".
        OpsCheck.CAPACITY: CheckRule(OpsSeverity.WARNING, quick, quick, clear_ratio=1.0),
    }


@dataclass(frozen=True, slots=True)
class ChecksOutcome:
    raised: list[OpsAlert]
    resolved: list[OpsAlert]


@dataclass(frozen=True, slots=True)
class ObservationRound:
    """One run's observations; ``covered``: the checks observed for every subject they have, so a
    subject without an observation is healthy (the fleet was read, and that node is not in it).
    ``forecast`` and ``registered`` (nodes reporting) when the fleet was read."""

    observations: list[Observation]
    covered: frozenset[OpsCheck]
    forecast: list[DayForecast] = field(default_factory=list)
    registered: int | None = None


def ops_checks_record(*, observed: ObservationRound, now: datetime) -> ChecksOutcome:
    """Move each check's clocks by this run's observations; raise and resolve what is due."""
    rules = ops_check_rules()
    seen = {(observation.check, observation.subject) for observation in observed.observations}
    raised: list[OpsAlert] = []
    resolved: list[OpsAlert] = []
    for observation in observed.observations:
        outcome = _observe(observation, rule=rules[observation.check], now=now)
        if isinstance(outcome, OpsAlert):
            (raised if outcome.status == OpsAlertStatus.OPEN else resolved).append(outcome)
    # A covered check's unobserved subject is healthy: a node gone from the registry no longer has
    # a slow p99. Its state is forgotten unless an open alert still waits to be resolved.
    open_keys = set(OpsAlert.objects.filter(status=OpsAlertStatus.OPEN).values_list("kind", "subject"))
    for state in OpsCheckState.objects.filter(kind__in=observed.covered):
        key = (OpsCheck(state.kind), state.subject)
        if key in seen:
            continue
        if key not in open_keys:
            state.delete()
            continue
        quiet = Observation(check=key[0], subject=state.subject, value=0.0, threshold=1.0, message="")
        outcome = _observe(quiet, rule=rules[key[0]], now=now)
        if isinstance(outcome, OpsAlert):
            resolved.append(outcome)
    _forecast_publish(observed)
    open_counts = dict(
        OpsAlert.objects.filter(status=OpsAlertStatus.OPEN).values_list("kind").annotate(count=Count("pk")).order_by()
    )
    for check in OpsCheck:
        OPS_ALERTS_OPEN.labels(check.value).set(open_counts.get(check.value, 0))
    return ChecksOutcome(raised=raised, resolved=resolved)


def _forecast_publish(observed: ObservationRound) -> None:
    """The forecast as metrics, for dashboards and an autoscaler (day 0's recommended nodes)."""
    for day in observed.forecast:
        label = str(day.offset)
        CAPACITY_FORECAST_SOCKETS.labels(label).set(day.sockets)
        CAPACITY_FORECAST_EVENTS.labels(label).set(day.events_per_second)
        CAPACITY_FORECAST_DELIVERIES.labels(label).set(day.deliveries_per_second)
        CAPACITY_RECOMMENDED_NODES.labels(label).set(day.nodes)
    if observed.registered is not None:
        CAPACITY_REGISTERED_NODES.set(observed.registered)


def _observe(observation: Observation, *, rule: CheckRule, now: datetime) -> OpsAlert | None:
    """Record one observation; the alert it raised or resolved, if it did."""
    with transaction.atomic():
        state, _ = OpsCheckState.objects.select_for_update().get_or_create(
            kind=observation.check, subject=observation.subject, defaults={"checked_at": now}
        )
        value, threshold = observation.value, observation.threshold
        if (now - state.checked_at).total_seconds() > STALE_RUNS * settings.OPS_CHECK_SECONDS:
            state.breaching_since = state.healthy_since = None
        if value > threshold:
            state.breaching_since, state.healthy_since = state.breaching_since or now, None
        elif value <= threshold * rule.clear_ratio:
            state.breaching_since, state.healthy_since = None, state.healthy_since or now
        else:
            state.breaching_since = state.healthy_since = None
        state.value = _figure(value)
        state.checked_at = now
        state.save()
        open_alert = OpsAlert.objects.filter(
            kind=observation.check, subject=observation.subject, status=OpsAlertStatus.OPEN
        ).first()
        if open_alert is None:
            if state.breaching_since is not None and now - state.breaching_since >= rule.raise_after:
                return _raise(observation, rule=rule, now=now)
            return None
        if state.healthy_since is not None and now - state.healthy_since >= rule.resolve_after:
            open_alert.status, open_alert.resolved_at = OpsAlertStatus.RESOLVED, now
            open_alert.save(update_fields=["status", "resolved_at"])
            logger.info("ops.resolved", check=open_alert.kind, subject=open_alert.subject)
            return open_alert
        if value > threshold:
            open_alert.value = _figure(value)
            open_alert.save(update_fields=["value"])
        return None


def _figure(value: float) -> float | None:
    """A value as stored: None for the infinity of something that did not answer."""
    return value if math.isfinite(value) else None


def _raise(observation: Observation, *, rule: CheckRule, now: datetime) -> OpsAlert | None:
    try:
        with transaction.atomic():
            alert = OpsAlert.objects.create(
                kind=observation.check,
                subject=observation.subject,
                severity=rule.severity,
                message=observation.message,
                value=_figure(observation.value),
                threshold=observation.threshold,
                raised_at=now,
            )
    except IntegrityError:  # another beat run raised it a moment ago
        return None
    OPS_ALERTS_RAISED.labels(observation.check.value, rule.severity.value).inc()
    logger.warning(
        "ops.raised", check=alert.kind, subject=alert.subject, severity=alert.severity, message=alert.message
    )
    if rule.severity == OpsSeverity.CRITICAL:
        escalation_create(ops_alert=alert, now=now)
    return alert
