from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.text import slugify

from wedsync.models import Agency, AuditOutcome, ServiceAccount, Wedding
from wedsync.refusals import Refused
from wedsync.selectors import wedding_may_oversee, weddings_visible
from wedsync.services.audit import AuditAction, ClientInfo, audit_record
from wedsync.services.auth import tokens_revoke_for_user


def wedding_delete(*, wedding: Wedding, actor: User | None, client: ClientInfo | None = None) -> None:
    """Delete a wedding and everything in it; its members' outstanding tokens stop working."""
    with transaction.atomic():
        user_ids = sorted(set(wedding.members.values_list("user_id", flat=True)))
        wedding_id, name = wedding.pk, wedding.name
        wedding.delete()
        for user_id in user_ids:
            tokens_revoke_for_user(user_id=user_id, reason="wedding_deleted", actor=actor, client=client)
        audit_record(
            action=AuditAction.WEDDING_DELETE,
            outcome=AuditOutcome.SUCCESS,
            actor=actor,
            wedding_id=wedding_id,
            target=f"wedding:{wedding_id}",
            client=client,
            details={"name": name, "members": len(user_ids)},
        )


# The fields the API may set; agency only on create (moving a wedding is a superuser's call, in the admin).
WEDDING_FIELDS = ("name", "date", "time_zone", "venue_name", "venue_address", "ceremony_at", "status")


def wedding_create(
    *, fields: dict[str, Any], agency: Agency | None, actor: User, client: ClientInfo | None = None
) -> Wedding:
    """A new wedding (validated as the admin validates it: the ceremony on the wedding's local day)."""
    wedding = Wedding(agency=agency, **{name: fields[name] for name in WEDDING_FIELDS if name in fields})
    wedding.slug = f"{slugify(wedding.name)[:80] or 'wedding'}-{get_random_string(8).lower()}"
    wedding.full_clean()
    with transaction.atomic():
        wedding.save()
        _change_audit(
            wedding,
            actor=actor,
            client=client,
            details={"op": "create", "name": wedding.name, "agency": agency.pk if agency else None},
        )
    return wedding


def wedding_create_allowed(*, user: User | AnonymousUser, account: ServiceAccount | None) -> bool:
    """Whether the caller may create weddings at all: a superuser, staff with Django's ``add``
    permission, or a service account (whose key has had its ``weddings`` scope checked)."""
    return bool(
        (user.is_active and user.is_superuser)
        or account is not None
        or (user.is_staff and user.has_perm("wedsync.add_wedding"))
    )


def wedding_create_refusal_audit(
    *, user: User | AnonymousUser, message: str, agency_id: int | None, client: ClientInfo | None
) -> Refused:
    audit_record(
        action=AuditAction.API_REFUSE,
        outcome=AuditOutcome.REFUSED,
        actor=user,
        target="wedding:new",
        client=client,
        details={"op": "create", "reason": message, "agency": agency_id},
    )
    return Refused(code="forbidden", message=message)


def wedding_agency_for_create(
    *,
    user: User | AnonymousUser,
    agency_id: int | None,
    account: ServiceAccount | None,
    client: ClientInfo | None = None,
) -> Agency | None:
    """The agency a new wedding goes into: any (or none) for a superuser; for anyone else one whose
    weddings they oversee, named, which a person also needs Django's ``add`` permission for (a
    service ``account``'s key has had its ``weddings`` scope checked). :class:`Refused` (audited)."""
    if user.is_active and user.is_superuser:
        return Agency.objects.filter(pk=agency_id).first() if agency_id is not None else None
    allowed = wedding_create_allowed(user=user, account=account)
    if account is not None:
        theirs = Agency.objects.filter(service_accounts=account)
    else:
        theirs = Agency.objects.filter(coordinators=user.pk) if user.pk is not None else Agency.objects.none()
    agency = theirs.filter(pk=agency_id).first() if allowed and agency_id is not None else None
    if agency is None:
        message = "Name an agency whose weddings you oversee." if allowed else "You may not create weddings."
        raise wedding_create_refusal_audit(user=user, message=message, agency_id=agency_id, client=client)
    return agency


def wedding_update(
    *, wedding_id: int, changes: dict[str, Any], expected_etag: str, actor: User, client: ClientInfo | None = None
) -> Wedding:
    """Apply ``changes`` if the wedding is still as the caller read it (``expected_etag``, from
    :func:`wedding_etag`); :class:`Refused` ``conflict`` otherwise, nothing written."""
    with transaction.atomic():
        wedding = _locked(wedding_id)
        if wedding_etag(wedding) != expected_etag:
            raise Refused(code="conflict", message="The wedding changed since you read it: read it again and retry.")
        changed = sorted(name for name in WEDDING_FIELDS if name in changes and getattr(wedding, name) != changes[name])
        for name in changed:
            setattr(wedding, name, changes[name])
        wedding.full_clean()
        if changed:
            wedding.save()
            _change_audit(wedding, actor=actor, client=client, details={"op": "change", "fields": changed})
    return wedding


def wedding_archive(*, wedding_id: int, actor: User, client: ClientInfo | None = None) -> Wedding:
    """Archive a wedding (idempotent): it leaves lists unless asked for; nothing in it is deleted."""
    with transaction.atomic():
        wedding = _locked(wedding_id)
        if wedding.archived_at is None:
            wedding.archived_at = timezone.now()
            wedding.save(update_fields=["archived_at", "updated_at"])
            _change_audit(wedding, actor=actor, client=client, details={"op": "archive"})
    return wedding


def _locked(wedding_id: int) -> Wedding:
    """The wedding, locked for this transaction; deleted since the caller's access check, it is
    refused as any unknown wedding is."""
    wedding = Wedding.objects.select_for_update().filter(pk=wedding_id).first()
    if wedding is None:
        raise Refused(code="not_found", message="No such wedding.")
    return wedding


def _change_audit(wedding: Wedding, *, actor: User, client: ClientInfo | None, details: dict[str, Any]) -> None:
    audit_record(
        action=AuditAction.WEDDING_CHANGE,
        outcome=AuditOutcome.SUCCESS,
        actor=actor,
        wedding_id=wedding.pk,
        target=f"wedding:{wedding.pk}",
        client=client,
        details=details,
    )


def wedding_etag(wedding: Wedding) -> str:
    """The wedding's version for ``ETag``/``If-Match``: every save moves ``updated_at``."""
    return f'"{wedding.pk}-{int(wedding.updated_at.timestamp() * 1_000_000)}"'


def wedding_access_check(
    *, user: User | AnonymousUser, wedding_id: int, write: bool, needs_permission: bool, client: ClientInfo | None
) -> Wedding:
    """The wedding, if the caller may read it (a member, or staff who oversee it) or, with
    ``write``, change it (staff who oversee it, with Django's ``change`` permission when
    ``needs_permission``: a person; a key's scope is checked before). :class:`Refused` otherwise,
    ``forbidden`` alike for a wedding that does not exist (audited), ``not_found`` for a superuser."""
    if user.is_active and user.is_superuser:
        allowed = True  # told when it does not exist
    elif write:
        allowed = wedding_may_oversee(user=user, wedding_id=wedding_id) and (
            not needs_permission or user.has_perm("wedsync.change_wedding")
        )
    else:
        allowed = weddings_visible(user=user).filter(pk=wedding_id).exists()
    wedding = Wedding.objects.filter(pk=wedding_id).first() if allowed else None
    if wedding is None:
        if allowed and user.is_superuser:
            raise Refused(code="not_found", message=f"There is no wedding {wedding_id}.")
        reason = (
            "Only the wedding's overseeing staff may change it." if write else "Only its members and staff may see it."
        )
        audit_record(
            action=AuditAction.API_REFUSE,
            outcome=AuditOutcome.REFUSED,
            actor=user,
            wedding_id=None,
            target=f"wedding:{wedding_id}",
            client=client,
            details={"op": "change" if write else "view", "reason": reason},
        )
        raise Refused(code="forbidden", message=reason)
    return wedding
