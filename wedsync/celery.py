"""The Celery application: settings come from Django's, under the ``CELERY_`` prefix."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wedsync.settings")

app = Celery("wedsync")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _worker_metrics(**_: Any) -> None:
    """A worker counts its task runs and, with WORKER_METRICS_PORT, serves them (monitoring/worker_metrics.py)."""
    from django.conf import settings

    from monitoring.worker_metrics import task_metrics_connect, worker_metrics_serve

    task_metrics_connect()
    if settings.WORKER_METRICS_PORT:
        worker_metrics_serve(address=settings.WORKER_METRICS_ADDRESS, port=settings.WORKER_METRICS_PORT)
