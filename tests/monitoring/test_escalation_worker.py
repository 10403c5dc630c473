"""End to end with a real Celery worker and beat on a Redis of the test's own: beat finds the alert
nobody acknowledged, the worker's attempts are spaced by real (short) countdowns through the
broker, and the third attempt is delivered."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from http import HTTPStatus
from itertools import pairwise

import pytest
from django.utils import timezone

from monitoring.models import Escalation, EscalationStatus
from tests.monitoring.webhook_server import webhook_server
from tests.personas import WeddingParty
from tests.realtime.nodes import node_environment
from tests.servers import celery_worker_with_beat, redis_server

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

BACKOFF = 0.5  # seconds: the first step; short so the test takes seconds, long enough to measure
DEADLINE = 60.0


def test_a_real_worker_retries_through_the_broker_and_delivers(party: WeddingParty, make_alert, tmp_path) -> None:
    secret = secrets.token_urlsafe(32)
    with (
        webhook_server(script=[HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.INTERNAL_SERVER_ERROR]) as hook,
        redis_server() as redis,
    ):
        after = 1
        make_alert(party.paula, raised_at=timezone.now() - dt.timedelta(seconds=after + 1))
        env = node_environment(
            redis_url=redis.url,
            extra={
                "WEDSYNC_ESCALATION_AFTER_SECONDS": str(after),
                "WEDSYNC_ESCALATION_SWEEP_SECONDS": "1",
                "WEDSYNC_ESCALATION_WEBHOOK_URL": hook.url,
                "WEDSYNC_ESCALATION_WEBHOOK_SECRET": secret,
                "WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS": str(BACKOFF),
            },
        )
        with celery_worker_with_beat(env, tmp_path) as worker:
            deadline = time.monotonic() + DEADLINE
            while not Escalation.objects.filter(status=EscalationStatus.DELIVERED).exists():
                assert worker.poll() is None, (tmp_path / "worker.log").read_text(errors="replace")[-5000:]
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text(errors="replace")[-5000:]
                time.sleep(0.1)
    escalation = Escalation.objects.get()
    assert (escalation.attempts, len(hook.received)) == (3, 3)
    assert [received.headers["x-wedsync-attempt"] for received in hook.received] == ["1", "2", "3"]
    # The waits were the task's countdowns, served by the broker: at least half of each step.
    arrivals = [received.at for received in hook.received]
    gaps = [later - earlier for earlier, later in pairwise(arrivals)]
    assert gaps[0] >= BACKOFF / 2 and gaps[1] >= BACKOFF, gaps
