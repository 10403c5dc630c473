"""Auditing the admin's sign-ins (django-axes counts them: wedsync/admin_login.py).

Each failure that counts towards a lockout is one audit row, so an address writes at most
``ADMIN_LOGIN_FAILURE_LIMIT`` of them per cool-off; the lockout is one more. Attempts while locked
out are not counted by axes: the first from an address in a cool-off is audited, the rest only
counted in ``wedsync_admin_login_refusals_total``, so hammering a locked form cannot flood the log.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache

from monitoring.metrics import ADMIN_LOGIN_REFUSALS
from wedsync.models import AuditOutcome
from wedsync.services.audit import AuditAction, ClientInfo, audit_record


def admin_login_failure_record(
    *, username: str, client: ClientInfo, failures: int, locked_before: bool, locked_now: bool
) -> None:
    """Audit a failed admin sign-in: ``failures`` is axes' count after it, ``locked_before`` says it
    was tried while already locked out, ``locked_now`` that it is (this one may have locked it)."""
    cooloff = settings.ADMIN_LOGIN_COOLOFF_SECONDS
    if locked_before:
        ADMIN_LOGIN_REFUSALS.labels(reason="locked_out").inc()
        if cache.add(f"admin-login-locked-audited:{client.ip or 'unknown'}", 1, timeout=cooloff):
            audit_record(
                action=AuditAction.ADMIN_LOGIN_REFUSE,
                outcome=AuditOutcome.REFUSED,
                actor_label=username,
                client=client,
                details={"reason": "locked_out", "cooloff_seconds": cooloff},
            )
        return
    ADMIN_LOGIN_REFUSALS.labels(reason="bad_credentials").inc()
    audit_record(
        action=AuditAction.ADMIN_LOGIN_REFUSE,
        outcome=AuditOutcome.REFUSED,
        actor_label=username,
        client=client,
        details={"reason": "bad_credentials", "failures": failures, "limit": settings.ADMIN_LOGIN_FAILURE_LIMIT},
    )
    if locked_now:
        audit_record(
            action=AuditAction.ADMIN_LOGIN_LOCKOUT,
            outcome=AuditOutcome.REFUSED,
            actor_label=username,
            client=client,
            details={"failures": failures, "cooloff_seconds": cooloff},
        )


def admin_login_success_record(*, user: User, client: ClientInfo) -> None:
    audit_record(action=AuditAction.ADMIN_LOGIN, outcome=AuditOutcome.SUCCESS, actor=user, client=client)
