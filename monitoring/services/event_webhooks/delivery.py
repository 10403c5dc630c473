"""Delivering subscriptions' events: a beat sweep (:func:`event_webhooks_dispatch_due`) hands every
subscription with something to send to one task (:func:`event_webhook_deliver`), which reads the
events after its cursor as a staff observer of the wedding sees them (``events_history``:
member-addressed events never) and POSTs them with the escalation webhook's signature
(``monitoring.webhooks``), one batch at a time so the order holds (decision 0032)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitoring.metrics import EVENT_WEBHOOK_DELIVERIES, EVENT_WEBHOOK_EVENTS
from monitoring.models import DeadLetter, DeadLetterState, EventWebhook
from monitoring.selectors import event_webhooks_due
from monitoring.services.event_webhooks.subscriptions import (
    PAUSE_FIELDS,
    event_webhook_may_receive,
    event_webhook_pause_apply,
)
from monitoring.webhooks import (
    EVENTS_HEADER_ID,
    EVENTS_USER_AGENT,
    WebhookOutcome,
    backoff_countdown,
    webhook_body,
    webhook_post,
)
from realtime.selectors import OBSERVER_MEMBER_ID, OBSERVER_ROLE, events_history, stream_heads
from wedsync.celery import app as celery_app

logger = structlog.get_logger(__name__)

PAYLOAD_VERSION = 1
# The Celery task that delivers one subscription's batches (monitoring/tasks.py registers it).
DELIVER_EVENT_WEBHOOK_TASK = "monitoring.tasks.deliver_event_webhook"
# A batch stops growing past this many bytes of events (one event always goes, however large:
# an event is at most REALTIME_MAX_FRAME bytes).
BATCH_MAX_BYTES = 1_000_000
# Events looked through per read for those a subscription receives (the rest are skipped: other
# types, member-addressed), and reads per claim: a subscription to a rare type behind a long log
# moves its cursor on a bounded stretch at a time.
SCAN_WINDOW = 5_000
SCAN_WINDOWS_PER_CLAIM = 4
# An attempt's claim lasts its whole-request timeout plus this, for saving its outcome.
CLAIM_GRACE_SECONDS = 5.0
# A delivery message that has not started this long after the sweep queued it (a lost broker
# message, a dead worker) is superseded: the next sweep queues another.
DISPATCH_LEASE_SECONDS = 60.0
ACCESS_LOST = (
    "Its service account no longer may: inactive, without the webhooks scope, or no longer overseeing the wedding."
)


# --- The sweep ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatched:
    webhook_id: int
    dispatch_id: uuid.UUID


def event_webhooks_dispatch_due(*, now: datetime | None = None) -> list[Dispatched]:
    """Queue a delivery task for each active subscription with something to send (at most
    ``WEDSYNC_EVENT_WEBHOOK_SUBSCRIPTIONS_PER_SWEEP``, those waiting longest first). Each is claimed
    under a row lock and given a dispatch id its message must carry, so two beat workers (or a
    sweep and a running delivery) never hand one subscription to two tasks."""
    now = now or timezone.now()
    lease_end = now + timedelta(seconds=DISPATCH_LEASE_SECONDS)
    with transaction.atomic():
        due = list(
            event_webhooks_due(now=now).select_for_update(skip_locked=True)[
                : settings.WEDSYNC_EVENT_WEBHOOK_SUBSCRIPTIONS_PER_SWEEP
            ]
        )
        for webhook in due:
            webhook.dispatch_id = uuid.uuid4()
            webhook.next_attempt_at = lease_end
        EventWebhook.objects.bulk_update(due, ["dispatch_id", "next_attempt_at"])
        dispatched = [Dispatched(webhook_id=webhook.pk, dispatch_id=webhook.dispatch_id) for webhook in due]  # type: ignore[arg-type]
        for one in dispatched:
            delivery = celery_app.signature(
                DELIVER_EVENT_WEBHOOK_TASK, kwargs={"webhook_id": one.webhook_id, "dispatch_id": str(one.dispatch_id)}
            )
            transaction.on_commit(delivery.delay)  # named, not imported: the tasks module imports this one
    return dispatched


# --- Delivering --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claimed:
    """One attempt at the subscription's batch, claimed: what to POST, and how to recognise the
    claim when its outcome is saved."""

    url: str
    secret: str
    body: bytes
    delivery_id: uuid.UUID
    attempt: int  # in this run of attempts at the batch
    attempts: int  # the subscription's attempts counter once claimed: changed, the claim lapsed
    events: int


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    """What one delivery task came to: the batches and events delivered, and how it ended:
    ``caught_up`` (nothing more to send now), ``more`` (its batches used up; the next sweep goes on),
    ``retry`` (an attempt failed; the sweep retries after the backoff), ``paused`` (dead-lettered,
    or its account may no longer receive), ``superseded`` (not this message's turn) or ``gone``."""

    outcome: str
    batches: int = 0
    events: int = 0


def event_webhook_deliver(*, webhook_id: int, dispatch_id: uuid.UUID) -> DeliveryRun:
    """Deliver the subscription's events after its cursor, one batch after another (at most
    ``WEDSYNC_EVENT_WEBHOOK_BATCHES_PER_RUN``), by the message queued with ``dispatch_id``. A 2xx
    moves the cursor past the batch; anything else leaves it where it is, and the same batch is
    tried again after a backoff, until ``WEDSYNC_EVENT_WEBHOOK_ATTEMPTS``: then it is dead-lettered
    and the subscription paused. No database lock is held during a POST."""
    batches = events = 0
    turns = settings.WEDSYNC_EVENT_WEBHOOK_BATCHES_PER_RUN
    for turn in range(turns):
        claimed = _attempt_claim(webhook_id=webhook_id, dispatch_id=dispatch_id, now=timezone.now())
        if isinstance(claimed, str):
            return DeliveryRun(outcome=claimed, batches=batches, events=events)
        outcome = webhook_post(
            url=claimed.url,
            secret=claimed.secret,
            body=claimed.body,
            delivery_id=str(claimed.delivery_id),
            attempt=claimed.attempt,
            timestamp=int(timezone.now().timestamp()),
            timeout=settings.WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS,
            id_header=EVENTS_HEADER_ID,
            user_agent=EVENTS_USER_AGENT,
        )
        settled = _attempt_settle(
            webhook_id=webhook_id, claimed=claimed, outcome=outcome, now=timezone.now(), go_on=turn + 1 < turns
        )
        if isinstance(settled, str):
            return DeliveryRun(outcome=settled, batches=batches, events=events)
        batches, events = batches + 1, events + claimed.events
        if settled is None:  # the run's last batch, or the subscription was paused during the POST
            return DeliveryRun(outcome="more" if turn + 1 == turns else "paused", batches=batches, events=events)
        dispatch_id = settled
    return DeliveryRun(outcome="more", batches=batches, events=events)


def _attempt_claim(*, webhook_id: int, dispatch_id: uuid.UUID, now: datetime) -> _Claimed | str:
    """Under the subscription's lock: check the message's turn and the account's access, read the
    next batch if none is in flight, and claim an attempt at it; or say why there is none."""
    with transaction.atomic():
        webhook = (
            EventWebhook.objects.select_for_update(of=("self",))
            .select_related("service_account__user")
            .filter(pk=webhook_id)
            .first()
        )
        if webhook is None:
            return "gone"
        if not webhook.is_active or webhook.dispatch_id != dispatch_id:
            EVENT_WEBHOOK_DELIVERIES.labels(outcome="superseded").inc()
            return "superseded"
        if not event_webhook_may_receive(webhook=webhook):
            EVENT_WEBHOOK_DELIVERIES.labels(outcome="paused").inc()
            event_webhook_pause_apply(webhook=webhook, reason=ACCESS_LOST, now=now)
            webhook.save(update_fields=PAUSE_FIELDS)
            return "paused"
        if webhook.delivery_id is None and not _batch_read(webhook):
            webhook.dispatch_id = None
            webhook.next_attempt_at = now  # due again as soon as its stream moves on
            webhook.save(update_fields=["last_delivered_seq", "dispatch_id", "next_attempt_at"])
            return "caught_up"
        webhook.attempts += 1
        webhook.run_attempts += 1
        webhook.last_attempt_at = now
        webhook.dispatch_id = None
        # Until this attempt's outcome is saved: the POST ends within its whole-request timeout; a
        # worker that dies meanwhile is noticed by the sweep once this has passed.
        webhook.next_attempt_at = now + timedelta(
            seconds=settings.WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS + CLAIM_GRACE_SECONDS
        )
        webhook.save(
            update_fields=[
                "last_delivered_seq",
                "delivery_id",
                "batch_upto",
                "batch_payload",
                "attempts",
                "run_attempts",
                "last_attempt_at",
                "dispatch_id",
                "next_attempt_at",
            ]
        )
        payload: dict[str, Any] = webhook.batch_payload or {}
        return _Claimed(
            url=webhook.url,
            secret=webhook.secret,
            body=webhook_body(payload),
            delivery_id=webhook.delivery_id,  # type: ignore[arg-type]  # set by _batch_read or before
            attempt=webhook.run_attempts,
            attempts=webhook.attempts,
            events=len(payload.get("events", [])),
        )


def _batch_read(webhook: EventWebhook) -> bool:
    """Read the next batch after the cursor into the subscription (not saved): the events a staff
    observer sees, of its types, at most ``WEDSYNC_EVENT_WEBHOOK_BATCH_MAX`` and about
    ``BATCH_MAX_BYTES``. Stretches with none of those move the cursor past them. False when
    there is nothing to send now."""
    head = stream_heads(wedding_ids=[webhook.wedding_id]).get(webhook.wedding_id, 0)
    for _window in range(SCAN_WINDOWS_PER_CLAIM):
        after = webhook.last_delivered_seq
        if after >= head:
            return False
        window_end = min(head, after + SCAN_WINDOW)
        page = events_history(
            wedding_id=webhook.wedding_id,
            member_id=OBSERVER_MEMBER_ID,  # no member has it: member-addressed events are never seen
            role=OBSERVER_ROLE,
            after=after,
            before=window_end + 1,
            since=None,
            until=None,
            types=frozenset(webhook.event_types),
            limit=settings.WEDSYNC_EVENT_WEBHOOK_BATCH_MAX,
        )
        # Read up to next_after when the page filled up, else through the whole window.
        upto = page.next_after if page.next_after is not None else window_end
        events: list[dict[str, Any]] = []
        size = 0
        for frame in page.events:
            size += len(webhook_body(frame))
            if events and size > BATCH_MAX_BYTES:
                upto = events[-1]["seq"]
                break
            events.append(frame)
        if not events:
            webhook.last_delivered_seq = upto  # nothing of this subscription's in that stretch
            continue
        webhook.delivery_id = uuid.uuid4()
        webhook.batch_upto = upto
        webhook.batch_payload = {
            "version": PAYLOAD_VERSION,
            "delivery_id": str(webhook.delivery_id),
            "subscription_id": webhook.pk,
            "wedding_id": webhook.wedding_id,
            "after": after,
            "upto": upto,
            "events": events,
        }
        webhook.run_attempts = 0
        return True
    return False


def _public_error(outcome: WebhookOutcome) -> str:
    """What the integrator is shown of a failure: the status, never the body it answered with (a
    URL could name an internal service whose answers are nobody's business)."""
    return f"HTTP {outcome.status}" if outcome.status is not None else outcome.error[:200]


def _attempt_settle(
    *, webhook_id: int, claimed: _Claimed, outcome: WebhookOutcome, now: datetime, go_on: bool
) -> uuid.UUID | str | None:
    """Save an attempt's outcome. Delivered: the cursor moves past the batch, and the dispatch id
    for the next batch of this run is returned (None when the run should stop here). Not delivered:
    the next attempt is scheduled, or the batch dead-lettered and the subscription paused; returns
    what the run came to."""
    with transaction.atomic():
        webhook = EventWebhook.objects.select_for_update().filter(pk=webhook_id).first()
        if webhook is None:
            return "gone"  # unsubscribed during the POST
        if webhook.attempts != claimed.attempts or webhook.delivery_id != claimed.delivery_id:
            # This worker outlived its claim (frozen past it) and another attempt was claimed:
            # that one owns the subscription now; the receiver de-duplicates on the delivery id.
            logger.warning("event_webhook.claim_lapsed", webhook=webhook_id, delivery=str(claimed.delivery_id))
            return "superseded"
        if outcome.delivered:
            EVENT_WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
            EVENT_WEBHOOK_EVENTS.inc(claimed.events)
            webhook.last_delivered_seq = webhook.batch_upto or webhook.last_delivered_seq
            webhook.last_delivered_at = now
            webhook.delivery_id = webhook.batch_upto = webhook.batch_payload = None
            webhook.run_attempts = 0
            webhook.last_error = ""
            next_dispatch = uuid.uuid4() if go_on and webhook.is_active else None
            webhook.dispatch_id = next_dispatch
            webhook.next_attempt_at = now + timedelta(seconds=DISPATCH_LEASE_SECONDS) if next_dispatch else now
            webhook.save(
                update_fields=[
                    "last_delivered_seq",
                    "last_delivered_at",
                    "delivery_id",
                    "batch_upto",
                    "batch_payload",
                    "run_attempts",
                    "last_error",
                    "dispatch_id",
                    "next_attempt_at",
                ]
            )
            webhook.dead_letters.filter(state=DeadLetterState.RETRYING).update(
                state=DeadLetterState.DELIVERED, resolved_at=now
            )
            logger.info(
                "event_webhook.delivered", webhook=webhook_id, upto=webhook.last_delivered_seq, events=claimed.events
            )
            return next_dispatch
        webhook.last_error = outcome.error
        if webhook.run_attempts >= settings.WEDSYNC_EVENT_WEBHOOK_ATTEMPTS:
            EVENT_WEBHOOK_DELIVERIES.labels(outcome="dead_lettered").inc()
            _dead_letter(webhook, outcome=outcome, now=now)
            return "paused"
        EVENT_WEBHOOK_DELIVERIES.labels(outcome="retry").inc()
        retry_in = backoff_countdown(
            attempt=webhook.run_attempts,
            base=settings.WEDSYNC_EVENT_WEBHOOK_BACKOFF_SECONDS,
            cap=settings.WEDSYNC_EVENT_WEBHOOK_BACKOFF_MAX_SECONDS,
        )
        webhook.next_attempt_at = now + timedelta(seconds=retry_in)
        webhook.save(update_fields=["last_error", "next_attempt_at"])
    logger.warning(
        "event_webhook.retry", webhook=webhook_id, attempt=claimed.attempt, retry_in=retry_in, error=outcome.error
    )
    return "retry"


def _dead_letter(webhook: EventWebhook, *, outcome: WebhookOutcome, now: datetime) -> None:
    """The batch ran out of attempts: a dead letter keeps it, and the subscription stops at it (the
    order is kept: nothing after it is sent before it). A staff retry that led here failed again."""
    webhook.dead_letters.filter(state=DeadLetterState.RETRYING).update(
        state=DeadLetterState.FAILED_AGAIN, resolved_at=now
    )
    DeadLetter.objects.create(
        event_webhook=webhook,
        payload=webhook.batch_payload or {},
        last_error=outcome.error,
        attempts=webhook.run_attempts,
        created_at=now,
    )
    tried = f"{webhook.run_attempts} attempt{'s' if webhook.run_attempts != 1 else ''}"
    event_webhook_pause_apply(webhook=webhook, reason=f"{tried} failed, the last: {_public_error(outcome)}", now=now)
    webhook.save(update_fields=["last_error", *PAUSE_FIELDS])
