"""How long the engine remembers: op ids, revisions and tombstones go with the event log
(``REALTIME_RETENTION_DAYS``). A phone's queued op older than that is applied afresh, a base version
older than the kept revisions is treated as contested by the record's last writer, and an edit of a
record deleted that long ago is a plain ``not_found``: each the safe reading of a forgotten past
(docs/decisions/0027)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from records.models import RecordRevision, RecordTombstone, SyncOpResult
from wedsync.services.retention import PurgeResult, orm_batch_delete, purge_in_batches


def sync_history_purge_expired(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> list[PurgeResult]:
    cutoff = (now or timezone.now()) - timedelta(days=settings.REALTIME_RETENTION_DAYS)
    return [
        purge_in_batches(
            purge=purge,
            delete_batch=orm_batch_delete(queryset),
            batch_size=batch_size,
            max_batches=max_batches,
        )
        for purge, queryset in (
            ("sync_op_results", SyncOpResult.objects.filter(created_at__lt=cutoff)),
            ("record_revisions", RecordRevision.objects.filter(created_at__lt=cutoff)),
            ("record_tombstones", RecordTombstone.objects.filter(deleted_at__lt=cutoff)),
        )
    ]
