"""Retention: what the service keeps, for how long, and the bounded purges that remove the rest.

Each purge deletes in batches of ``WEDSYNC_RETENTION_BATCH_SIZE`` rows, one short transaction per
batch, at most ``WEDSYNC_RETENTION_MAX_BATCHES`` batches per run (the next run goes on), so a purge
never holds a long lock on a wedding day. A batch locks the rows it takes (``SKIP LOCKED``), so two
workers running the same purge share the work instead of waiting on each other; a run that finds
nothing to do does nothing, so each purge is safe to repeat. The decision record is
docs/decisions/0023-retention-and-delivery-claims.md.

Events and tickets are purged by :mod:`realtime.services.retention` and
:func:`realtime.services.tickets.tickets_purge_expired` with :func:`purge_in_batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

import structlog
from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from monitoring.metrics import RETENTION_PURGED_ROWS
from wedsync.models import AuditLog, IdempotentRequest

logger = structlog.get_logger(__name__)

# The PostgreSQL setting the audit log's trigger reads (wedsync/migrations/0003): set for one
# transaction only, it lets that transaction delete entries older than the cutoff it names.
AUDIT_RETENTION_CUTOFF_SETTING = "wedsync.audit_retention_cutoff"


@dataclass(slots=True)
class PurgeResult:
    """What one run of a purge removed: rows per table (model label), in how many batches, and
    whether it finished (False: it stopped at the batch limit and the next run goes on)."""

    purge: str
    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    complete: bool = True

    @property
    def total(self) -> int:
        return sum(self.rows.values())


BatchDelete = Callable[[int], tuple[int, Mapping[str, int]]]


def purge_in_batches(
    *, purge: str, delete_batch: BatchDelete, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeResult:
    """Call ``delete_batch(limit)`` in its own transaction until it takes fewer than ``limit``
    rows, or ``max_batches`` times. It returns how many rows it took and the rows deleted per
    table (cascades included). Counts go to the log and to ``wedsync_retention_purged_rows_total``."""
    limit = batch_size or settings.WEDSYNC_RETENTION_BATCH_SIZE
    most = max_batches or settings.WEDSYNC_RETENTION_MAX_BATCHES
    result = PurgeResult(purge=purge, complete=False)
    while result.batches < most:
        with transaction.atomic():
            taken, deleted = delete_batch(limit)
        result.batches += 1
        for table, count in deleted.items():
            if count:
                result.rows[table] = result.rows.get(table, 0) + count
                RETENTION_PURGED_ROWS.labels(table=table).inc(count)
        if taken < limit:
            result.complete = True
            break
    logger.info("retention.purged", purge=purge, rows=result.rows, batches=result.batches, complete=result.complete)
    return result


def orm_batch_delete(queryset: models.QuerySet[Any]) -> BatchDelete:
    """A ``delete_batch`` for :func:`purge_in_batches` that deletes ``limit`` rows of ``queryset``
    at a time through the ORM, so each relation's ``on_delete`` applies (cascades, SET NULL) and a
    protected row stops the batch with ``ProtectedError`` rather than a dangling reference."""

    def delete_batch(limit: int) -> tuple[int, Mapping[str, int]]:
        # SKIP LOCKED: a second worker running the same purge takes the next rows, not these.
        pks = list(
            queryset.order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)[:limit]
        )
        if not pks:
            return 0, {}
        _, deleted = queryset.model._default_manager.filter(pk__in=pks).delete()
        return len(pks), deleted

    return delete_batch


def _expired_before(now: datetime | None) -> datetime:
    return (now or timezone.now()) - timedelta(seconds=settings.WEDSYNC_EXPIRED_GRACE_SECONDS)


# --- Refresh tokens and sessions -----------------------------------------------------------------


def outstanding_tokens_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeResult:
    """simplejwt's ``flushexpiredtokens``, in batches and with a grace: outstanding refresh tokens
    that expired ``WEDSYNC_EXPIRED_GRACE_SECONDS`` ago go, and their blacklist entries with them
    (an expired token is refused on its ``exp`` anyway; the grace outlasts ``SIMPLE_JWT["LEEWAY"]``,
    within which a blacklisted token must still be found blacklisted)."""
    expired = OutstandingToken.objects.filter(expires_at__lt=_expired_before(now))
    return purge_in_batches(
        purge="tokens", delete_batch=orm_batch_delete(expired), batch_size=batch_size, max_batches=max_batches
    )


def sessions_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeResult:
    """Django's ``clearsessions``, in batches: database sessions that expired
    ``WEDSYNC_EXPIRED_GRACE_SECONDS`` ago go. A session engine without a table (cache, signed
    cookies) is asked to clear its own expired sessions, as ``clearsessions`` does."""
    engine = import_module(settings.SESSION_ENGINE)
    store: Any = engine.SessionStore
    if not hasattr(store, "get_model_class"):
        try:
            store.clear_expired()
        except NotImplementedError:
            logger.info("retention.sessions_skipped", engine=settings.SESSION_ENGINE)
        return PurgeResult(purge="sessions")
    expired = store.get_model_class().objects.filter(expire_date__lt=_expired_before(now))
    return purge_in_batches(
        purge="sessions", delete_batch=orm_batch_delete(expired), batch_size=batch_size, max_batches=max_batches
    )


# --- Idempotency keys ------------------------------------------------------------------------------


def idempotent_requests_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeResult:
    """Stored answers to creating POSTs older than ``API_IDEMPOTENCY_KEY_HOURS``: a retry after
    that is a new request (decision 0031)."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.API_IDEMPOTENCY_KEY_HOURS)
    expired = IdempotentRequest.objects.filter(created_at__lt=cutoff)
    return purge_in_batches(
        purge="idempotency", delete_batch=orm_batch_delete(expired), batch_size=batch_size, max_batches=max_batches
    )


# --- The audit log -----------------------------------------------------------------------------------


def audit_retention_cutoff(*, now: datetime | None = None) -> datetime | None:
    """Entries older than this may be deleted; None when they are kept for ever (0 days)."""
    days = settings.WEDSYNC_AUDIT_RETENTION_DAYS
    return None if days == 0 else (now or timezone.now()) - timedelta(days=days)


def _audit_delete_batch(cutoff: datetime) -> BatchDelete:
    table = AuditLog._meta.db_table
    postgres = connection.vendor == "postgresql"
    lock = " FOR UPDATE SKIP LOCKED" if postgres else ""
    # The ORM refuses every delete on the audit log (wedsync/models/audit.py): this statement is
    # the one way entries leave, and on PostgreSQL the trigger checks it against the cutoff too.
    statement = (
        f"DELETE FROM {table} WHERE id IN "  # noqa: S608  the table name is the model's, not input
        f"(SELECT id FROM {table} WHERE at < %s ORDER BY at, id LIMIT %s{lock})"
    )

    def delete_batch(limit: int) -> tuple[int, Mapping[str, int]]:
        with connection.cursor() as cursor:
            if postgres:
                # Local to this batch's transaction: the next statement of the session is refused again.
                cursor.execute("SELECT set_config(%s, %s, true)", [AUDIT_RETENTION_CUTOFF_SETTING, cutoff.isoformat()])
            cursor.execute(statement, [cutoff, limit])
            deleted = cursor.rowcount
        return deleted, {AuditLog._meta.label: deleted}

    return delete_batch


def audit_entries_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> PurgeResult:
    """Delete audit entries older than ``WEDSYNC_AUDIT_RETENTION_DAYS`` (none when it is 0)."""
    cutoff = audit_retention_cutoff(now=now)
    if cutoff is None:
        return PurgeResult(purge="audit")
    return purge_in_batches(
        purge="audit", delete_batch=_audit_delete_batch(cutoff), batch_size=batch_size, max_batches=max_batches
    )
