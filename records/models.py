"""What the sync engine keeps beside the records themselves (docs/decisions/0027).

The records (timeline items, tasks, RSVPs) live in ``wedsync.models.records``; here are the
revisions that tell a stale edit what changed since its base, the op ids that make a resent edit
land once, the tombstones of deleted records, per-wedding strategy choices and the conflicts kept
for a planner to resolve.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class RecordKindName(models.TextChoices):
    TIMELINE_ITEM = "timeline_item", "Timeline item"
    TASK = "task", "Task"
    RSVP = "rsvp", "RSVP"


class Strategy(models.TextChoices):
    LAST_WRITE_WINS = "last_write_wins", "Last write wins"
    ROLE_HIERARCHY = "role_hierarchy", "Role hierarchy"
    FIELD_MERGE = "field_merge", "Field merge"
    MANUAL = "manual", "Manual (kept as a conflict)"


class RecordRevision(models.Model):
    """One version of one record: which fields it changed and the rank of who changed them."""

    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="record_revisions")
    kind = models.CharField(max_length=16, choices=RecordKindName.choices)
    record_id = models.BigIntegerField()
    version = models.PositiveIntegerField()
    fields = models.JSONField(default=list)
    rank = models.PositiveSmallIntegerField()
    member = models.ForeignKey("wedsync.Member", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "record_id", "version"], name="record_revision_unique_version")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.record_id} v{self.version}"


class SyncOpResult(models.Model):
    """The answer given to one client op id, so that a resent op is answered the same and changes nothing."""

    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    op_id = models.CharField(max_length=128)
    result = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "wedding", "op_id"], name="sync_op_result_unique_op")]

    def __str__(self) -> str:
        return f"op {self.op_id} of user {self.user_id}"


class RecordTombstone(models.Model):
    """A deleted record: a stale edit of it is answered ``not_found`` with the deletion's seq."""

    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=RecordKindName.choices)
    record_id = models.BigIntegerField()
    version = models.PositiveIntegerField()
    seq = models.PositiveBigIntegerField()
    deleted_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "record_id"], name="record_tombstone_unique")]

    def __str__(self) -> str:
        return f"{self.kind} {self.record_id} deleted at seq {self.seq}"


class WeddingStrategy(models.Model):
    """A wedding's choice of strategy for one record kind, over the kind's default."""

    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="record_strategies")
    kind = models.CharField(max_length=16, choices=RecordKindName.choices)
    strategy = models.CharField(max_length=16, choices=Strategy.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["wedding", "kind"], name="wedding_strategy_unique_kind")]
        verbose_name_plural = "wedding strategies"

    def __str__(self) -> str:
        return f"{self.kind}: {self.strategy}"


class ConflictStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class ConflictResolution(models.TextChoices):
    THEIRS = "theirs", "Keep the record as it is"
    MINE = "mine", "Apply the submitted edit"
    CUSTOM = "custom", "Apply merged values"


class Conflict(models.Model):
    """Both sides of a stale edit that the ``manual`` strategy kept for a planner to decide."""

    wedding = models.ForeignKey("wedsync.Wedding", on_delete=models.CASCADE, related_name="conflicts")
    kind = models.CharField(max_length=16, choices=RecordKindName.choices)
    record_id = models.BigIntegerField()
    strategy = models.CharField(max_length=16, choices=Strategy.choices)
    base_version = models.PositiveIntegerField()
    version = models.PositiveIntegerField(help_text="The record's version when the conflict was kept.")
    theirs = models.JSONField(help_text="The record's values of the contested fields.")
    mine = models.JSONField(help_text="The submitted changes.")
    member = models.ForeignKey(
        "wedsync.Member", on_delete=models.SET_NULL, null=True, blank=True, related_name="conflicts_submitted"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    against = models.JSONField(default=list, help_text="Members whose changes since the base are contested.")
    status = models.CharField(max_length=16, choices=ConflictStatus.choices, default=ConflictStatus.OPEN)
    resolution = models.CharField(max_length=16, choices=ConflictResolution.choices, blank=True)
    resolved_values = models.JSONField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["wedding", "status"], name="conflict_wedding_status_idx")]

    def __str__(self) -> str:
        return f"conflict {self.pk} on {self.kind} {self.record_id} ({self.status})"
