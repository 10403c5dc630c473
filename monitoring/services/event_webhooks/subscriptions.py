"""Subscriptions to a wedding's events: who may hold one (service accounts overseeing the wedding,
with the ``webhooks`` scope), and creating, deleting, rotating the secret of, pausing and resuming
one, each audited (decision 0032)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from monitoring.models import DeadLetter, DeadLetterState, EventWebhook
from monitoring.webhooks import (
    webhook_url_problem,
)
from realtime.selectors import stream_heads
from wedsync.models import ApiScope, AuditOutcome, ServiceAccount
from wedsync.refusals import Refused
from wedsync.selectors import wedding_may_oversee
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

logger = structlog.get_logger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105  a prefix, not a secret
# Subscriptions one service account may hold on one wedding: each costs a task per busy sweep.
WEBHOOKS_PER_WEDDING = 10


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


def event_webhook_may_receive(*, webhook: EventWebhook) -> bool:
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
        event_webhook_pause_apply(webhook=webhook, reason=f"Paused by {actor.get_username()}.", now=timezone.now())
        webhook.save(update_fields=PAUSE_FIELDS)
        _audit(action=AuditAction.EVENT_WEBHOOK_PAUSE, webhook=webhook, actor=actor, client=client)
    return True


def event_webhook_dead_letter_retry(*, dead_letter: DeadLetter, actor: User | None) -> bool:
    """Staff retry an open dead letter of an event webhook: its subscription resumes at that batch."""
    if dead_letter.event_webhook_id is None:
        raise ValueError("not an event webhook's dead letter")
    return event_webhook_resume(webhook_id=dead_letter.event_webhook_id, actor=actor, dead_letter_id=dead_letter.pk)


PAUSE_FIELDS = ["is_active", "paused_at", "pause_reason", "next_attempt_at", "dispatch_id"]


def event_webhook_pause_apply(*, webhook: EventWebhook, reason: str, now: datetime) -> None:
    """Stop sending (the caller saves ``PAUSE_FIELDS``); the batch in flight stays for the resume."""
    webhook.is_active = False
    webhook.paused_at = now
    webhook.pause_reason = reason[:300]
    webhook.next_attempt_at = None
    webhook.dispatch_id = None
    logger.warning("event_webhook.paused", webhook=webhook.pk, wedding=webhook.wedding_id, reason=reason)
