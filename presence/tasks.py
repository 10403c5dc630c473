"""Presence's periodic work (Celery beat; schedules in wedsync/settings.py)."""

from __future__ import annotations

import structlog
from celery import shared_task
from django.utils import timezone

from presence.alerts.services import alerts_evaluate
from presence.selectors import presence_devices
from presence.services import presence_sweep
from presence.store import MemoryPresenceStore, presence_store

logger = structlog.get_logger(__name__)


@shared_task(name="presence.tasks.sweep_presence", ignore_result=True)
def sweep_presence() -> int:
    """Devices that missed their heartbeats, or whose node died, go offline (leaves are told)."""
    return presence_sweep()


@shared_task(name="presence.tasks.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> int:
    """Run the wedding-day alert rules (presence/alerts/): raise, escalate, resolve, re-notify.
    Safe on several workers at once; returns how many alerts changed or were told again."""
    if isinstance(presence_store(), MemoryPresenceStore):
        # Embedded (no REDIS_URL), presence lives in the socket process: this worker would see
        # nobody online and raise an alert for every key person of the day.
        logger.info("alerts.skipped", reason="presence is in-process without REDIS_URL")
        return 0
    return alerts_evaluate(now=timezone.now(), devices_of=presence_devices).total
