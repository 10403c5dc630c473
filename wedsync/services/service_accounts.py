"""Service accounts and their API keys: creating an account, issuing, rotating and revoking keys,
and checking a key a request presents (decision 0030). Every change is audited."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.text import slugify

from wedsync.models import Agency, ApiScope, AuditOutcome, ServiceAccount, ServiceAccountKey, Wedding
from wedsync.refusals import Refused
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.auth import tokens_revoke_for_user

LAST_USED_EVERY = timedelta(minutes=1)  # a key's last-used time is written at most this often


class ApiKeyRefused(Refused):
    """A presented key that does not authenticate; ``reason`` is from a closed set (audited)."""

    def __init__(self, *, reason: str, message: str, user: User | None = None) -> None:
        super().__init__(code="unauthorized", message=message)
        self.reason = reason
        self.user = user  # the account's user, when the key is genuine but unusable


def service_account_create(
    *,
    name: str,
    scopes: Iterable[ApiScope | str],
    agency: Agency | None = None,
    weddings: Iterable[Wedding] = (),
    actor: User | None,
    client: ClientInfo | None = None,
) -> ServiceAccount:
    """An account with a user of its own: staff (so staff scope applies to it), without a password
    (so nobody signs in as it: only its keys authenticate)."""
    with transaction.atomic():
        account = ServiceAccount(name=name, agency=agency, scopes=list(scopes), created_by=actor)
        service_account_save(account=account, actor=actor, client=client)
        account.weddings.set(list(weddings))
    return account


def service_account_save(*, account: ServiceAccount, actor: User | None, client: ClientInfo | None = None) -> None:
    """Store a new or changed account; a new one gets its user first (the admin's form saves its
    weddings after this)."""
    adding = account.pk is None
    account.scopes = sorted({ApiScope(scope).value for scope in account.scopes})  # ValueError for an unknown one
    with transaction.atomic():
        if adding:
            account.user = get_user_model().objects.create_user(
                username=f"svc-{slugify(account.name)[:100] or 'account'}-{get_random_string(6).lower()}",
                first_name=account.name[:150],
                password=None,  # unusable
                is_staff=True,
            )
            account.created_by = account.created_by or actor
        account.save()
        audit_record(
            action=AuditAction.SERVICE_ACCOUNT_CHANGE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            target=f"service_account:{account.pk}",
            client=client,
            details={
                "op": "create" if adding else "change",
                "name": account.name,
                "scopes": account.scopes,
                "agency": account.agency_id,
                "active": account.is_active,
            },
        )


def service_account_key_issue(
    *,
    account: ServiceAccount,
    name: str,
    actor: User | None,
    client: ClientInfo | None = None,
    expires_at: datetime | None = None,
) -> tuple[ServiceAccountKey, str]:
    """A new key: the returned ``<prefix>.<secret>`` is the only time anyone sees it."""
    with transaction.atomic():
        made, raw = ServiceAccountKey.objects.create_key(
            service_account=account, name=name[:50], expiry_date=expires_at
        )
        key = cast(ServiceAccountKey, made)
        audit_record(
            action=AuditAction.API_KEY_ISSUE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            target=f"api_key:{key.prefix}",
            client=client,
            details={"service_account": account.pk, "name": key.name},
        )
    return key, raw


def service_account_key_rotate(
    *, key: ServiceAccountKey, actor: User | None, client: ClientInfo | None = None
) -> tuple[ServiceAccountKey, str]:
    """A new key with the same name; the old one keeps working for API_KEY_ROTATION_GRACE_SECONDS,
    so the integrator can deploy the new one without an outage."""
    grace_until = timezone.now() + timedelta(seconds=settings.API_KEY_ROTATION_GRACE_SECONDS)
    with transaction.atomic():
        fresh, raw = service_account_key_issue(
            account=key.service_account, name=key.name, actor=actor, client=client, expires_at=key.expiry_date
        )
        if key.expiry_date is None or key.expiry_date > grace_until:
            ServiceAccountKey.objects.filter(pk=key.pk).update(expiry_date=grace_until)
        audit_record(
            action=AuditAction.API_KEY_ROTATE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            target=f"api_key:{key.prefix}",
            client=client,
            details={
                "service_account": key.service_account_id,
                "replaced_by": fresh.prefix,
                "old_until": grace_until.isoformat(),
            },
        )
    return fresh, raw


def service_account_key_revoke(*, key: ServiceAccountKey, actor: User | None, client: ClientInfo | None = None) -> None:
    """Revoked for good (the library refuses to un-revoke); refused from the next request on. The
    account's sockets close too (its user's token generation moves on; the other keys' clients
    reconnect with fresh tickets)."""
    with transaction.atomic():
        ServiceAccountKey.objects.filter(pk=key.pk).update(revoked=True)
        tokens_revoke_for_user(
            user_id=key.service_account.user_id, reason="api_key_revoked", actor=actor, client=client
        )
        audit_record(
            action=AuditAction.API_KEY_REVOKE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            target=f"api_key:{key.prefix}",
            client=client,
            details={"service_account": key.service_account_id},
        )


def api_key_verify(*, raw: str) -> ServiceAccountKey:
    """The key ``raw`` names, if it authenticates: known, not revoked, not expired, its account and
    user active. Raises :class:`ApiKeyRefused`. Notes when it was last used (at most once a minute)."""
    prefix, dot, secret = raw.partition(".")
    if not dot or not prefix or not secret:
        raise ApiKeyRefused(reason="malformed", message="Expected an API key '<prefix>.<secret>'.")
    found = ServiceAccountKey.objects.select_related("service_account__user").filter(prefix=prefix).first()
    key = cast(ServiceAccountKey | None, found)
    if key is None or not key.is_valid(raw):
        raise ApiKeyRefused(reason="unknown_key", message="This API key is not valid.")
    account = key.service_account
    if key.revoked:
        raise ApiKeyRefused(reason="revoked", message="This API key was revoked.", user=account.user)
    if key.has_expired:
        raise ApiKeyRefused(
            reason="expired", message="This API key has expired: use its replacement.", user=account.user
        )
    if not account.is_active or not account.user.is_active:
        message = "This API key's service account is disabled."
        raise ApiKeyRefused(reason="account_inactive", message=message, user=account.user)
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_EVERY:
        ServiceAccountKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY)
        ).update(last_used_at=now)
    return key
