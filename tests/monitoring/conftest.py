"""Escalation fixtures: Celery in eager mode (retries run at once, their countdowns recorded), or
Celery publishing for real with each delivery message kept for the test to run as a worker would;
a real local webhook server wired into the settings; alerts as the presence rules store them."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from celery.exceptions import Retry
from celery.signals import before_task_publish, task_failure, task_retry
from django.db import connection
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


@dataclass(frozen=True)
class DeliveryMessage:
    """A ``deliver_escalation`` message as the broker got it."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retries: int
    eta: str | None


def run_as_worker(message: DeliveryMessage) -> str:
    """Run one delivery message the way a Celery worker's tracer does: its request on the task's
    stack, then the task's body; a retry publishes its message to the broker (so a test sees it)
    and ends the run. Returns what the task returned, or "retry". Safe in a thread of its own."""
    from monitoring.tasks import deliver_escalation

    deliver_escalation.push_request(
        id=str(uuid.uuid4()),
        args=list(message.args),
        kwargs=dict(message.kwargs),
        retries=message.retries,
        is_eager=False,
        called_directly=False,
        delivery_info={"routing_key": "celery", "exchange": "", "priority": 0, "redelivered": False},
    )
    try:
        return str(deliver_escalation.run(*message.args, **message.kwargs))
    except Retry:
        return "retry"
    finally:
        deliver_escalation.pop_request()
        connection.close()  # a thread's own connection; the main thread's reopens on its next query


@pytest.fixture
def delivery_messages() -> Iterator[list[DeliveryMessage]]:
    """Celery publishes to the test's real broker and nothing consumes: every delivery message
    (first attempt, Celery retry, stall re-queue, staff retry) is recorded here, in order, for the
    test to run with :func:`run_as_worker` when and where it likes. The queue is purged after."""
    assert not app.conf.task_always_eager
    published: list[DeliveryMessage] = []

    def on_publish(sender: str | None = None, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        if sender == "monitoring.tasks.deliver_escalation":
            args, task_kwargs, _embed = body
            published.append(
                DeliveryMessage(
                    args=tuple(args), kwargs=dict(task_kwargs), retries=int(headers["retries"]), eta=headers["eta"]
                )
            )

    before_task_publish.connect(on_publish, weak=False)
    try:
        yield published
    finally:
        before_task_publish.disconnect(on_publish)
        app.control.purge()


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
