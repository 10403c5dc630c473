"""Event webhooks: an integrator's service account subscribes a URL to a wedding's events, and WedSync
POSTs them there, in seq order, in signed batches, retried with backoff; a batch that runs out of
attempts is dead-lettered and its subscription paused at it, for staff (or the integrator) to resume.

Nothing here runs when an event is published: a beat sweep (:func:`event_webhooks_dispatch_due`)
hands every subscription with something to send to one delivery task (:func:`event_webhook_deliver`),
which reads the events after the subscription's cursor as a staff observer of the wedding sees them
(``realtime.selectors.events_history``: member-addressed events never) and POSTs them with the
escalation webhook's signature (``monitoring.webhooks``). Decision record:
docs/decisions/0032-outbound-event-webhooks.md; receivers' contract: docs/webhooks.md.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from monitoring.metrics import EVENT_WEBHOOK_DELIVERIES, EVENT_WEBHOOK_EVENTS
from monitoring.models import DeadLetter, DeadLetterState, EventWebhook
from monitoring.selectors import event_webhooks_due
from monitoring.webhooks import (
    EVENTS_HEADER_ID,
    EVENTS_USER_AGENT,
    WebhookOutcome,
    backoff_countdown,
    webhook_body,
    webhook_post,
    webhook_url_problem,
)
from realtime.selectors import OBSERVER_MEMBER_ID, OBSERVER_ROLE, events_history, stream_heads
from wedsync.celery import app as celery_app
from wedsync.models import ApiScope, AuditOutcome, ServiceAccount
from wedsync.refusals import Refused
from wedsync.selectors import wedding_may_oversee
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

logger = structlog.get_logger(__name__)

PAYLOAD_VERSION = 1
SECRET_PREFIX = "whsec_"  # noqa: S105  a prefix, not a secret
# The Celery task that delivers one subscription's batches (monitoring/tasks.py registers it).
DELIVER_EVENT_WEBHOOK_TASK = "monitoring.tasks.deliver_event_webhook"
# Subscriptions one service account may hold on one wedding: each costs a task per busy sweep.
WEBHOOKS_PER_WEDDING = 10
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


# --- Who may (the API's checks, audited) ------------------------------------------------------------


def _refusal(
    *, user: User | AnonymousUser, wedding_id: int, op: str, reason: str, client: ClientInfo | None
) -> Refused:
    audit_record(
        action=AuditAction.API_REFUSE,
        outcome=AuditOutcome.REFUSED,
        actor=user,
        target=f"wedding:{wedding_id}",
        client=client,
        details={"op": f"webhooks {op}", "reason": reason},
    )
    return Refused(code="forbidden", message=reason)


def event_webhook_account_check(
    *,
    user: User | AnonymousUser,
    account: ServiceAccount | None,
    wedding_id: int,
    op: str,
    client: ClientInfo | None,
) -> ServiceAccount:
    """The service account whose key asks, if it oversees the wedding. :class:`Refused` ``forbidden``
    (audited) for a person (people follow a wedding over its socket) and, alike whether it exists,
    for a wedding the account does not oversee. The key's ``webhooks`` scope is checked before."""
    if account is None:
        reason = "Webhook subscriptions belong to service accounts: send an API key (people follow a wedding live)."
        raise _refusal(user=user, wedding_id=wedding_id, op=op, reason=reason, client=client)
    if not wedding_may_oversee(user=user, wedding_id=wedding_id):
        reason = "This API key's service account does not oversee this wedding."
        raise _refusal(user=user, wedding_id=wedding_id, op=op, reason=reason, client=client)
    return account


def _may_receive(webhook: EventWebhook) -> bool:
    """Whether the subscription's account may still receive the wedding's events, checked before
    every batch: what the API checked at subscribing may have changed since."""
    account = webhook.service_account
    return (
        account.is_active
        and account.allows(ApiScope.WEBHOOKS)
        and wedding_may_oversee(user=account.user, wedding_id=webhook.wedding_id)
    )


def _audit(
    *, action: AuditAction, webhook: EventWebhook, actor: User | None, client: ClientInfo | None, **details: Any
) -> None:
    audit_record(
        action=action,
        outcome=AuditOutcome.SUCCESS,
        actor=actor,
        wedding_id=webhook.wedding_id,
        target=f"webhook:{webhook.pk}",
        client=client,
        details={"url": webhook.url, **details},
    )


# --- Subscriptions ------------------------------------------------------------------------------------


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def event_webhook_create(
    *,
    account: ServiceAccount,
    wedding_id: int,
    url: str,
    event_types: list[str],
    actor: User,
    client: ClientInfo | None = None,
) -> tuple[EventWebhook, str]:
    """Subscribe ``url`` to the wedding's events of ``event_types`` (every type when empty) from now
    on: its cursor starts at the wedding's last seq. Returns it with its signing secret, which is not
    shown again. :class:`ValidationError` for a URL the webhook rules refuse, or past
    ``WEBHOOKS_PER_WEDDING``."""
    problem = webhook_url_problem(url, debug=settings.DEBUG)
    if problem is not None:
        raise ValidationError({"url": [f"The URL {problem}."]})
    now = timezone.now()
    with transaction.atomic():
        # The account's row serialises its creates, so two at once cannot both pass the cap.
        ServiceAccount.objects.select_for_update().filter(pk=account.pk).first()
        held = EventWebhook.objects.filter(service_account=account, wedding_id=wedding_id).count()
        if held >= WEBHOOKS_PER_WEDDING:
            message = f"A service account may hold at most {WEBHOOKS_PER_WEDDING} subscriptions to one wedding."
            raise ValidationError({"non_field_errors": [message]})
        secret = _new_secret()
        webhook = EventWebhook.objects.create(
            service_account=account,
            wedding_id=wedding_id,
            url=url,
            event_types=sorted(set(event_types)),
            secret=secret,
            created_at=now,
            last_delivered_seq=stream_heads(wedding_ids=[wedding_id]).get(wedding_id, 0),
            next_attempt_at=now,
        )
        _audit(
            action=AuditAction.EVENT_WEBHOOK_CREATE,
            webhook=webhook,
            actor=actor,
            client=client,
            types=webhook.event_types,
        )
    return webhook, secret


def event_webhook_delete(*, webhook: EventWebhook, actor: User, client: ClientInfo | None = None) -> None:
    """Unsubscribe: nothing more is sent (a delivery in flight ends, its outcome is dropped), and
    the subscription's dead letters go with it."""
    with transaction.atomic():
        _audit(action=AuditAction.EVENT_WEBHOOK_DELETE, webhook=webhook, actor=actor, client=client)
        webhook.delete()


def event_webhook_secret_rotate(
    *, webhook: EventWebhook, actor: User, client: ClientInfo | None = None
) -> tuple[EventWebhook, str]:
    """A new signing secret, used from the next attempt on (the old one from then on signs nothing)."""
    with transaction.atomic():
        locked = EventWebhook.objects.select_for_update().get(pk=webhook.pk)
        secret = _new_secret()
        locked.secret = secret
        locked.save(update_fields=["secret"])
        _audit(action=AuditAction.EVENT_WEBHOOK_ROTATE, webhook=locked, actor=actor, client=client)
    return locked, secret


def event_webhook_resume(
    *, webhook_id: int, actor: User | None, client: ClientInfo | None = None, dead_letter_id: int | None = None
) -> bool:
    """Resume a paused subscription: the batch it stopped at (if any) gets a new run of attempts, with
    the same delivery id and body, at the next sweep, and delivery goes on in order. Its open dead
    letters become ``retrying`` (then ``delivered`` or ``failed_again``). False when it was active
    already, or when ``dead_letter_id`` is given and that dead letter is no longer open."""
    now = timezone.now()
    with transaction.atomic():
        # The subscription first, then its dead letters: the order delivery locks them in.
        webhook = EventWebhook.objects.select_for_update().filter(pk=webhook_id).first()
        if webhook is None:
            return False
        letters = list(
            webhook.dead_letters.select_for_update().filter(state=DeadLetterState.OPEN).values_list("pk", flat=True)
        )
        if webhook.is_active or (dead_letter_id is not None and dead_letter_id not in letters):
            return False
        DeadLetter.objects.filter(pk__in=letters).update(
            state=DeadLetterState.RETRYING, retried_at=now, retried_by=actor
        )
        webhook.is_active = True
        webhook.paused_at = None
        webhook.pause_reason = ""
        webhook.run_attempts = 0
        webhook.next_attempt_at = now
        webhook.dispatch_id = None
        webhook.save(
            update_fields=["is_active", "paused_at", "pause_reason", "run_attempts", "next_attempt_at", "dispatch_id"]
        )
        _audit(action=AuditAction.EVENT_WEBHOOK_RESUME, webhook=webhook, actor=actor, client=client)
    logger.info("event_webhook.resumed", webhook=webhook_id, by=actor.pk if actor else None)
    return True


def event_webhook_pause(*, webhook_id: int, actor: User, client: ClientInfo | None = None) -> bool:
    """Staff stop a subscription's deliveries (the admin); False when it was paused already."""
    with transaction.atomic():
        webhook = EventWebhook.objects.select_for_update().filter(pk=webhook_id).first()
        if webhook is None or not webhook.is_active:
            return False
        _pause(webhook, reason=f"Paused by {actor.get_username()}.", now=timezone.now())
        webhook.save(update_fields=_PAUSE_FIELDS)
        _audit(action=AuditAction.EVENT_WEBHOOK_PAUSE, webhook=webhook, actor=actor, client=client)
    return True


def event_webhook_dead_letter_retry(*, dead_letter: DeadLetter, actor: User | None) -> bool:
    """Staff retry an open dead letter of an event webhook: its subscription resumes at that batch."""
    if dead_letter.event_webhook_id is None:
        raise ValueError("not an event webhook's dead letter")
    return event_webhook_resume(webhook_id=dead_letter.event_webhook_id, actor=actor, dead_letter_id=dead_letter.pk)


_PAUSE_FIELDS = ["is_active", "paused_at", "pause_reason", "next_attempt_at", "dispatch_id"]


def _pause(webhook: EventWebhook, *, reason: str, now: datetime) -> None:
    """Stop sending (the caller saves ``_PAUSE_FIELDS``); the batch in flight stays for the resume."""
    webhook.is_active = False
    webhook.paused_at = now
    webhook.pause_reason = reason[:300]
    webhook.next_attempt_at = None
    webhook.dispatch_id = None
    logger.warning("event_webhook.paused", webhook=webhook.pk, wedding=webhook.wedding_id, reason=reason)


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
        if not _may_receive(webhook):
            EVENT_WEBHOOK_DELIVERIES.labels(outcome="paused").inc()
            _pause(webhook, reason=ACCESS_LOST, now=now)
            webhook.save(update_fields=_PAUSE_FIELDS)
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
    _pause(webhook, reason=f"{tried} failed, the last: {_public_error(outcome)}", now=now)
    webhook.save(update_fields=["last_error", *_PAUSE_FIELDS])
