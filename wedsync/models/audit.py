"""The append-only audit log: who did what, how, from where, and what came of it."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models


class AuditLogIsAppendOnly(Exception):
    """Raised on any attempt to change or remove an audit entry through the ORM."""


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise AuditLogIsAppendOnly("the audit log is append-only: entries cannot be changed or deleted")


class AuditLogQuerySet(models.QuerySet["AuditLog"]):
    update = _refuse
    delete = _refuse
    bulk_update = _refuse

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[AuditLog]:
        if kwargs.get("update_conflicts") or kwargs.get("ignore_conflicts"):
            _refuse()
        return super().bulk_create(objs, *args, **kwargs)

    update_or_create = _refuse
    aupdate = _refuse
    adelete = _refuse


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    REFUSED = "refused", "Refused"
    ERROR = "error", "Error"


class AuditLog(models.Model):
    # Plain references without database constraints: an entry outlives the user or wedding it names.
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_label = models.CharField(max_length=150, blank=True, help_text="Username at the time, or what was claimed.")
    wedding = models.ForeignKey(
        "wedsync.Wedding", on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True, help_text="Dotted name, e.g. auth.token.issue")
    target = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=16, choices=AuditOutcome.choices)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["wedding", "-at"], name="audit_wedding_at_idx"),
            models.Index(fields=["actor", "-at"], name="audit_actor_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            _refuse()
        # Always an INSERT: a new instance given an existing pk must not overwrite that entry.
        kwargs["force_insert"] = True
        kwargs.pop("force_update", None)
        kwargs.pop("update_fields", None)
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()
