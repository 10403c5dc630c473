"""Structured logging: every record, ours or a library's, leaves as one JSON line."""

from __future__ import annotations

import logging
from typing import Any

import structlog

# Balancers and orchestrators probe these every second or so (deploy/haproxy, Kubernetes).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class ProbeResponseFilter(logging.Filter):
    """Drops Django's "Service Unavailable: /readyz" lines. A probe's 503 is an answer, not a fault:
    a draining node gives it on purpose at every probe, and what is down is logged once per probe
    as ``readiness.down`` by the readiness check itself (monitoring/selectors.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        probe = getattr(getattr(record, "request", None), "path", None) in PROBE_PATHS
        answered = getattr(record, "status_code", None) == 503 and record.exc_info is None
        return not (probe and answered)  # a probe that crashed (500, a traceback) is still logged


def logging_config(*, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict for settings; also points structlog at the standard library."""
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ],
                "foreign_pre_chain": _SHARED_PROCESSORS,
            },
        },
        "filters": {"probe_responses": {"()": ProbeResponseFilter}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            "django.request": {"filters": ["probe_responses"]},
            "daphne": {"level": "INFO"},
        },
    }
