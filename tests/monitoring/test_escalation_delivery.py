"""Delivery to the integrator's webhook: signed, retried with exponential backoff and jitter,
dead-lettered after the last attempt, and retried from the admin. A real HTTP server on
127.0.0.1 plays the integrator; Celery runs eagerly, so a retry's countdown is recorded, not slept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from http import HTTPStatus

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from structlog.testing import capture_logs

from monitoring.models import DeadLetter, DeadLetterState, Escalation, EscalationStatus
from monitoring.services.escalation import NO_URL_REASON, escalations_create_due, escalations_requeue_stalled
from tests.monitoring.webhook_server import Received, WebhookServer
from tests.personas import WeddingParty
from tests.servers import free_port

pytestmark = [pytest.mark.requires_postgres, pytest.mark.django_db]


@pytest.fixture
def escalate(django_capture_on_commit_callbacks, make_alert, party: WeddingParty):
    """Raise a critical alert about the photographer that nobody acknowledges, and run the beat
    task's escalation past the deadline; delivery follows at once (eager Celery)."""

    def run() -> Escalation:
        overdue = timezone.now() - dt.timedelta(seconds=settings.WEDSYNC_ESCALATION_AFTER_SECONDS + 1)
        make_alert(party.paula, raised_at=overdue)
        with django_capture_on_commit_callbacks(execute=True):
            (escalation,) = escalations_create_due()
        escalation.refresh_from_db()
        return escalation

    return run


def _verify(received: Received, *, secret: str) -> dict:
    """What a receiver does: recompute the MAC over "<timestamp>." + the exact body."""
    timestamp = received.headers["x-wedsync-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["x-wedsync-signature"], f"v1={expected}")
    assert abs(int(timestamp) - timezone.now().timestamp()) < settings.WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS + 60
    assert received.headers["content-type"] == "application/json; charset=utf-8"
    payload: dict = json.loads(received.body)
    return payload


def _assert_backoff(countdowns: list[float]) -> None:
    """Each wait is half its exponential step plus up to half again (jitter), capped."""
    base = settings.WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS
    cap = settings.WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_MAX_SECONDS
    for attempt, countdown in enumerate(countdowns, start=1):
        step = min(cap, base * 2 ** (attempt - 1))
        assert step / 2 <= countdown <= step, (attempt, countdown)


def test_fails_twice_then_delivered_on_the_third_attempt(hook: WebhookServer, eager_celery, escalate, party):
    hook.script = [HTTPStatus.INTERNAL_SERVER_ERROR, HTTPStatus.SERVICE_UNAVAILABLE]
    escalation = escalate()
    assert (escalation.status, escalation.attempts, escalation.run_attempts) == (EscalationStatus.DELIVERED, 3, 3)
    assert escalation.delivered_at is not None and escalation.next_attempt_at is None
    assert len(eager_celery) == 2
    _assert_backoff(eager_celery)
    assert [received.headers["x-wedsync-attempt"] for received in hook.received] == ["1", "2", "3"]
    assert {received.body for received in hook.received} == {hook.received[0].body}  # the same body each time
    assert {received.headers["x-wedsync-escalation-id"] for received in hook.received} == {str(escalation.pk)}
    payload = _verify(hook.received[-1], secret=settings.WEDSYNC_ESCALATION_WEBHOOK_SECRET)
    assert payload == escalation.payload
    assert payload["escalation_id"] == str(escalation.pk)
    assert (payload["wedding"]["name"], payload["member"]["name"]) == (party.wedding.name, party.paula.name)
    assert not DeadLetter.objects.exists()


def test_a_webhook_that_always_fails_is_dead_lettered_after_the_last_attempt(
    hook: WebhookServer, eager_celery, escalate
):
    hook.then = HTTPStatus.BAD_GATEWAY
    attempts = settings.WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS
    escalation = escalate()
    assert len(hook.received) == attempts
    assert len(eager_celery) == attempts - 1
    _assert_backoff(eager_celery)
    assert (escalation.status, escalation.attempts) == (EscalationStatus.DEAD_LETTERED, attempts)
    (letter,) = DeadLetter.objects.all()
    assert (letter.escalation_id, letter.state, letter.attempts) == (escalation.pk, DeadLetterState.OPEN, attempts)
    assert letter.last_error == "HTTP 502: integrator says no"
    assert letter.payload == escalation.payload


def test_the_admin_retries_a_dead_letter_once_the_webhook_is_back(
    hook: WebhookServer, eager_celery, escalate, admin_client, admin_user, django_capture_on_commit_callbacks
):
    hook.then = HTTPStatus.SERVICE_UNAVAILABLE
    escalation = escalate()
    letter = DeadLetter.objects.get()
    changelist = reverse("admin:monitoring_deadletter_changelist")
    assert letter.last_error.encode() in admin_client.get(changelist).content
    sent_before = len(hook.received)

    hook.then = HTTPStatus.NO_CONTENT
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(changelist, {"action": "retry", "_selected_action": [letter.pk]}, follow=True)
    assert b"Queued 1 for delivery" in response.content
    assert len(hook.received) == sent_before + 1
    escalation.refresh_from_db()
    letter.refresh_from_db()
    assert (escalation.status, escalation.attempts, escalation.run_attempts) == (
        EscalationStatus.DELIVERED,
        sent_before + 1,
        1,
    )
    assert (letter.state, letter.retried_by, letter.resolved_at is not None) == (
        DeadLetterState.DELIVERED,
        admin_user,
        True,
    )
    _verify(hook.received[-1], secret=settings.WEDSYNC_ESCALATION_WEBHOOK_SECRET)

    response = admin_client.post(changelist, {"action": "retry", "_selected_action": [letter.pk]}, follow=True)
    assert b"Skipped 1: only open dead letters can be retried" in response.content
    assert len(hook.received) == sent_before + 1


def test_a_retry_that_fails_again_leaves_a_new_dead_letter(
    hook: WebhookServer, eager_celery, escalate, admin_client, django_capture_on_commit_callbacks
):
    hook.then = HTTPStatus.SERVICE_UNAVAILABLE
    escalation = escalate()
    first = DeadLetter.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:monitoring_deadletter_changelist"), {"action": "retry", "_selected_action": [first.pk]}
        )
    first.refresh_from_db()
    second = DeadLetter.objects.exclude(pk=first.pk).get()
    assert (first.state, second.state) == (DeadLetterState.FAILED_AGAIN, DeadLetterState.OPEN)
    assert second.attempts == settings.WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS
    escalation.refresh_from_db()
    assert escalation.attempts == 2 * settings.WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS


def test_with_no_webhook_configured_nothing_is_sent_and_staff_see_why(settings, eager_celery, escalate):
    settings.WEDSYNC_ESCALATION_WEBHOOK_URL = None
    with capture_logs() as logs:
        escalation = escalate()
    assert (escalation.status, escalation.attempts) == (EscalationStatus.DEAD_LETTERED, 0)
    (letter,) = DeadLetter.objects.all()
    assert (letter.last_error, letter.attempts) == (NO_URL_REASON, 0)
    assert any(line["event"] == "escalation.dead_lettered" and line["log_level"] == "warning" for line in logs)


@pytest.mark.parametrize("failure", ["refused", "timeout", "redirect"])
def test_no_answer_a_slow_answer_or_a_redirect_is_not_a_delivery(
    failure: str, hook: WebhookServer, settings, eager_celery, escalate
):
    settings.WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS = 2
    settings.WEDSYNC_ESCALATION_WEBHOOK_TIMEOUT_SECONDS = 0.2
    if failure == "refused":
        settings.WEDSYNC_ESCALATION_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/hook"
    elif failure == "timeout":
        hook.delay = 1.0
    else:
        hook.then = HTTPStatus.FOUND
    escalation = escalate()
    assert (escalation.status, escalation.attempts) == (EscalationStatus.DEAD_LETTERED, 2)
    expected = {"refused": "Connection refused", "timeout": "timed out", "redirect": "HTTP 302"}[failure]
    assert expected in DeadLetter.objects.get().last_error


def test_a_stalled_delivery_is_queued_again_once(
    hook: WebhookServer, settings, eager_celery, escalate, django_capture_on_commit_callbacks
):
    settings.WEDSYNC_ESCALATION_WEBHOOK_URL = None
    escalation = escalate()  # dead-lettered; make it look like a pending delivery whose message was lost
    settings.WEDSYNC_ESCALATION_WEBHOOK_URL = hook.url
    overdue = timezone.now() - dt.timedelta(seconds=settings.WEDSYNC_ESCALATION_STALL_SECONDS + 1)
    Escalation.objects.filter(pk=escalation.pk).update(status=EscalationStatus.PENDING, next_attempt_at=overdue)
    with django_capture_on_commit_callbacks(execute=True):
        assert escalations_requeue_stalled() == 1
        assert escalations_requeue_stalled() == 0
    escalation.refresh_from_db()
    assert (escalation.status, len(hook.received)) == (EscalationStatus.DELIVERED, 1)


def test_staff_see_escalations_with_status_attempts_and_last_error(
    hook: WebhookServer, settings, eager_celery, escalate, admin_client
):
    settings.WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS = 1
    hook.then = HTTPStatus.TOO_MANY_REQUESTS
    escalation = escalate()
    listing = admin_client.get(reverse("admin:monitoring_escalation_changelist")).content.decode()
    assert "Dead-lettered" in listing and "HTTP 429: integrator says no" in listing
    page = admin_client.get(reverse("admin:monitoring_escalation_change", args=[escalation.pk]))
    assert page.status_code == 200 and str(escalation.pk) in page.content.decode()
    assert admin_client.get(reverse("admin:monitoring_escalation_add")).status_code == 403
