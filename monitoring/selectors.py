"""Reads about the health of this process and what it depends on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import structlog
from django.conf import settings
from django.db import connection

from monitoring.metrics import READINESS_FAILURES

logger = structlog.get_logger(__name__)

_PROBE_TIMEOUT = 1.0


def _database_problem() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"; the message says which
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def _channel_layer_problem() -> str | None:
    layer: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    for host in layer.get("CONFIG", {}).get("hosts", []):
        address = host["address"] if isinstance(host, dict) else host
        client = redis.Redis.from_url(address, socket_connect_timeout=_PROBE_TIMEOUT, socket_timeout=_PROBE_TIMEOUT)
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}".strip()
        finally:
            client.close()
    return None


_CHECKS: dict[str, Callable[[], str | None]] = {
    "database": _database_problem,
    "channel_layer": _channel_layer_problem,
}


def readiness_report() -> dict[str, str | None]:
    """``component -> None`` when it answers, else what is wrong with it (for the log, not the public)."""
    report: dict[str, str | None] = {}
    for component, check in _CHECKS.items():
        problem = check()
        if problem is not None:
            READINESS_FAILURES.labels(component=component).inc()
            logger.warning("readiness.down", component=component, problem=problem)
        report[component] = problem
    return report
