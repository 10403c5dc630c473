"""At most one POST in flight per escalation, whichever messages reach the workers.

Delivery messages go to the real broker and are run here the way a worker runs them
(``run_as_worker``), each in its own thread where the race needs it; a real HTTP server on
127.0.0.1 plays the integrator and counts the requests it holds at once.
"""

from __future__ import annotations

import datetime as dt
import threading
from http import HTTPStatus

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from monitoring.models import Escalation, EscalationStatus
from monitoring.services.escalation import escalations_create_due, escalations_requeue_stalled
from tests.monitoring.conftest import DeliveryMessage, run_as_worker
from tests.monitoring.webhook_server import WebhookServer
from tests.personas import WeddingParty

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]


def _escalate(make_alert, party: WeddingParty) -> Escalation:
    """A critical alert about the photographer nobody acknowledged, escalated by the beat task;
    its first delivery message is queued (not run)."""
    make_alert(
        party.paula, raised_at=timezone.now() - dt.timedelta(seconds=settings.WEDSYNC_ESCALATION_AFTER_SECONDS + 1)
    )
    (escalation,) = escalations_create_due()
    return escalation


def _in_threads(messages: list[DeliveryMessage]) -> tuple[list[threading.Thread], list[str]]:
    results: list[str] = []
    threads = [threading.Thread(target=lambda m=message: results.append(run_as_worker(m))) for message in messages]
    for thread in threads:
        thread.start()
    return threads, results


def test_a_late_celery_retry_and_the_stall_requeue_send_the_next_attempt_once(
    hook: WebhookServer, delivery_messages: list[DeliveryMessage], make_alert, party: WeddingParty
) -> None:
    hook.script = [HTTPStatus.SERVICE_UNAVAILABLE]
    escalation = _escalate(make_alert, party)
    (first,) = delivery_messages
    assert run_as_worker(first) == "retry"  # attempt 1 failed: Celery queued its retry with a countdown
    retry = delivery_messages[1]
    assert retry.eta is not None

    # The worker holding the retry is busy long past the countdown, so beat re-queues the escalation.
    late = timezone.now() + dt.timedelta(
        seconds=settings.WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_MAX_SECONDS + settings.WEDSYNC_ESCALATION_STALL_SECONDS + 1
    )
    with time_machine.travel(late, tick=False):
        assert escalations_requeue_stalled() == 1
    requeued = delivery_messages[2]

    # Now both messages run at once; the receiver holds whatever reaches it until both have had their go.
    hook.gate = threading.Event()
    threads, results = _in_threads([retry, requeued])
    hook.wait_for(lambda server: server.in_flight == 2 or (server.in_flight == 1 and len(results) == 1))
    hook.gate.set()
    for thread in threads:
        thread.join(timeout=30)

    assert (len(hook.received), hook.max_in_flight) == (2, 1)  # attempt 1, then one attempt 2
    assert sorted(results) == ["delivered", "skipped"]
    escalation.refresh_from_db()
    assert (escalation.status, escalation.attempts) == (EscalationStatus.DELIVERED, 2)
    assert [received.headers["x-wedsync-attempt"] for received in hook.received] == ["1", "2"]


def test_a_receiver_that_trickles_cannot_hold_an_attempt_until_the_stall_requeue_sends_it_again(
    hook: WebhookServer, delivery_messages: list[DeliveryMessage], make_alert, party: WeddingParty, settings
) -> None:
    """The worker is slow because the receiver drips its answer (each byte well within a
    per-read timeout). The beat task keeps looking for stalled deliveries the whole time, with no
    stall margin at all: the attempt must end at its whole-request timeout, inside its claim."""
    settings.WEDSYNC_ESCALATION_STALL_SECONDS = 0
    settings.WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS = 0.5
    settings.WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS = 60.0  # the Celery retry is not what is tested
    hook.drip = 0.05  # the 200 would take about 2 s to trickle in
    escalation = _escalate(make_alert, party)
    (first,) = delivery_messages
    (slow,), results = _in_threads([first])
    hook.wait_for(lambda server: len(server.received) == 1)
    requeues = 0
    while slow.is_alive():
        requeues += escalations_requeue_stalled()
        for message in delivery_messages[1:]:
            if message.eta is None:  # a re-queued message: run it at once, as an idle worker would
                delivery_messages.remove(message)
                results.append(run_as_worker(message))
        slow.join(timeout=0.05)

    assert (requeues, len(hook.received), hook.max_in_flight) == (0, 1, 1)
    assert results == ["retry"]
    escalation.refresh_from_db()
    assert (escalation.status, escalation.attempts) == (EscalationStatus.PENDING, 1)
    assert "timed out" in escalation.last_error


def test_a_message_delivered_twice_makes_one_attempt(
    hook: WebhookServer, delivery_messages: list[DeliveryMessage], make_alert, party: WeddingParty
) -> None:
    escalation = _escalate(make_alert, party)
    (first,) = delivery_messages
    hook.gate = threading.Event()
    threads, results = _in_threads([first, first])  # the broker hands the same message to two workers
    hook.wait_for(lambda server: server.in_flight == 2 or (server.in_flight == 1 and len(results) == 1))
    hook.gate.set()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == ["delivered", "skipped"]
    assert (len(hook.received), hook.max_in_flight) == (1, 1)
    escalation.refresh_from_db()
    assert (escalation.status, escalation.attempts) == (EscalationStatus.DELIVERED, 1)


def test_a_message_queued_before_dispatch_ids_does_nothing_and_the_stall_requeue_takes_over(
    hook: WebhookServer, delivery_messages: list[DeliveryMessage], make_alert, party: WeddingParty
) -> None:
    escalation = _escalate(make_alert, party)
    legacy = DeliveryMessage(args=(str(escalation.pk),), kwargs={}, retries=0, eta=None)
    assert run_as_worker(legacy) == "skipped"
    assert hook.received == []
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=settings.WEDSYNC_ESCALATION_STALL_SECONDS + 1)):
        assert escalations_requeue_stalled() == 1
    assert run_as_worker(delivery_messages[-1]) == "delivered"
    assert len(hook.received) == 1
