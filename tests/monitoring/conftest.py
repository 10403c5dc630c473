"""Escalation fixtures: Celery in eager mode (retries run at once, their countdowns recorded), a
real local webhook server wired into the settings, and alerts as the presence rules store them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from celery.signals import task_failure, task_retry
from django.utils import timezone

from presence.models import Alert, AlertKind, AlertSeverity
from tests.monitoring.webhook_server import WebhookServer, webhook_server
from wedsync.celery import app
from wedsync.models import Member


@pytest.fixture
def eager_celery() -> Iterator[list[float]]:
    """Tasks run in the calling thread; a ``self.retry(countdown=...)`` runs the next attempt at
    once instead of sleeping. Yields the countdowns the delivery task asked for, in order.

    Eager mode must not propagate exceptions (Celery would raise the ``Retry`` itself instead of
    running the retry), so a task that fails is caught here through ``task_failure`` and fails the test.
    """
    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False
    countdowns: list[float] = []
    failures: list[BaseException] = []

    def on_retry(sender: Any, reason: Any, **kwargs: Any) -> None:
        if sender.name == "monitoring.tasks.deliver_escalation":
            countdowns.append(float(reason.when))

    def on_failure(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        failures.append(exception)

    task_retry.connect(on_retry, weak=False)
    task_failure.connect(on_failure, weak=False)
    try:
        yield countdowns
    finally:
        task_retry.disconnect(on_retry)
        task_failure.disconnect(on_failure)
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved
    if failures:
        raise failures[0]


@pytest.fixture
def hook(settings: Any) -> Iterator[WebhookServer]:
    """A webhook endpoint that accepts everything (change ``script``/``then`` to make it fail)."""
    with webhook_server() as server:
        settings.WEDSYNC_ESCALATION_WEBHOOK_URL = server.url
        settings.WEDSYNC_ESCALATION_WEBHOOK_SECRET = secrets.token_urlsafe(32)
        yield server


@pytest.fixture
def make_alert() -> Callable[..., Alert]:
    def make(
        member: Member,
        *,
        severity: str = AlertSeverity.CRITICAL,
        raised_at: datetime | None = None,
        kind: str = AlertKind.KEY_PERSON_MISSING,
        **fields: Any,
    ) -> Alert:
        return Alert.objects.create(
            wedding=member.wedding,
            member=member,
            kind=kind,
            severity=severity,
            message=f"{member.name} is not at the venue 15 minutes before the ceremony",
            raised_at=raised_at or timezone.now(),
            **fields,
        )

    return make
