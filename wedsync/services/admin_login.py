"""Auditing the admin's sign-ins (django-axes counts them: wedsync/admin_login.py).

A failed sign-in is a refusal of someone nobody identified, audited like every other one
(:func:`wedsync.services.audit.audit_refusal_record`, decision 0025): per address and reason
(``bad_credentials``, or ``locked_out`` for attempts while locked out, which axes does not count
again), the first of a window is a row and the rest one row with their count. Reaching the limit
is a row of its own (``admin.login.lockout``), as is a successful sign-in.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User

from monitoring.metrics import ADMIN_LOGIN_REFUSALS
from wedsync.models import AuditOutcome
from wedsync.services.audit import AuditAction, ClientInfo, audit_record, audit_refusal_record


def admin_login_failure_record(
    *, username: str, client: ClientInfo, failures: int, locked_before: bool, locked_now: bool
) -> None:
    """Audit a failed admin sign-in: ``failures`` is axes' count after it, ``locked_before`` says it
    was tried while already locked out, ``locked_now`` that it is (this one may have locked it)."""
    cooloff = settings.ADMIN_LOGIN_COOLOFF_SECONDS
    reason = "locked_out" if locked_before else "bad_credentials"
    ADMIN_LOGIN_REFUSALS.labels(reason=reason).inc()
    details: dict[str, object] = (
        {"cooloff_seconds": cooloff}
        if locked_before
        else {"failures": failures, "limit": settings.ADMIN_LOGIN_FAILURE_LIMIT}
    )
    audit_refusal_record(
        action=AuditAction.ADMIN_LOGIN_REFUSE, reason=reason, client=client, actor_label=username, details=details
    )
    if locked_now and not locked_before:
        audit_record(
            action=AuditAction.ADMIN_LOGIN_LOCKOUT,
            outcome=AuditOutcome.REFUSED,
            actor_label=username,
            client=client,
            details={"failures": failures, "cooloff_seconds": cooloff},
        )


def admin_login_success_record(*, user: User, client: ClientInfo) -> None:
    audit_record(action=AuditAction.ADMIN_LOGIN, outcome=AuditOutcome.SUCCESS, actor=user, client=client)
