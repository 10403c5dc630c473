"""Who a REST caller is in a wedding's shared records, and reading one record as them
(docs/protocol.md, Shared records). The changes themselves go through records.services like a
socket's ``sync``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User

from realtime.selectors import member_for_publish
from records.registry import Actor, RecordKind
from records.selectors import record_view, records_visible
from records.services import SyncRefused, actor_for_member, actor_for_staff, deleted_refusal
from wedsync.models import AuditOutcome, Wedding
from wedsync.selectors import wedding_may_oversee
from wedsync.services.audit import AuditAction, ClientInfo, audit_record


def _refusal_audit(*, actor: User | AnonymousUser | None, wedding_id: int, target: str, **details: Any) -> None:
    audit_record(
        action=AuditAction.RECORD_REFUSE,
        outcome=AuditOutcome.REFUSED,
        actor=actor,
        wedding_id=wedding_id,
        target=target[:200],
        client=details.pop("client", None),
        details=details,
    )


def record_actor(*, user: User | AnonymousUser, wedding_id: int, client: ClientInfo | None = None) -> Actor:
    """The caller as the engine's actor: their active member of the wedding (the same actor as
    their socket's ``sync``, so their own edits never contest each other whichever way they came,
    and they spend one rate budget), else, for staff who oversee the wedding, a planner's view as
    no member (as in the admin). Anyone else is refused ``forbidden`` (audited) whether or not the
    wedding exists; a superuser naming no wedding is told ``not_found``."""
    member = member_for_publish(user_id=user.pk, wedding_id=wedding_id) if user.is_authenticated else None
    if member is not None and isinstance(user, User):
        member.user = user  # the whole account, not the few fields the query reads
        return actor_for_member(member)
    if wedding_may_oversee(user=user, wedding_id=wedding_id):
        if user.is_superuser and not Wedding.objects.filter(pk=wedding_id).exists():
            raise SyncRefused(code="not_found", message=f"There is no wedding {wedding_id}.")
        return actor_for_staff(user=user, wedding_id=wedding_id)
    reason = "Only the wedding's members and staff may do that."
    _refusal_audit(actor=user, wedding_id=wedding_id, target=f"wedding:{wedding_id}", reason=reason, client=client)
    raise SyncRefused(code="forbidden", message=reason)


def record_visible(
    *, kind: RecordKind, actor: Actor, record_id: int, client: ClientInfo | None = None
) -> dict[str, Any]:
    """One record as the actor may see it (:func:`records.selectors.record_view`); ``not_found``
    (with ``deleted_seq`` once deleted) or ``forbidden`` (audited) otherwise, as an edit of it
    would be answered."""
    queryset = kind.queryset(wedding_id=actor.wedding_id).filter(pk=record_id)
    record = queryset.first()
    if record is None:
        raise deleted_refusal(kind, wedding_id=actor.wedding_id, record_id=record_id)
    if not kind.may_view(actor, record):
        reason = f"you may not see {kind.name} {record_id}"
        _refusal_audit(
            actor=actor.user,
            wedding_id=actor.wedding_id,
            target=f"{kind.name}:{record_id}",
            member=actor.member_id,
            role=actor.role,
            reason=reason,
            client=client,
        )
        raise SyncRefused(code="forbidden", message=reason)
    return record_view(kind=kind, actor=actor, record=record)


def records_page(*, kind: RecordKind, actor: Actor, after: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The records of a kind the actor may see with ids above ``after``, at most ``limit``, and
    whether more follow. A wedding's records are hundreds at most, so they are read whole."""
    visible = [record for record in records_visible(kind=kind, actor=actor) if record["id"] > after]
    return visible[:limit], len(visible) > limit
