"""The core domain: weddings and their members, the agencies that oversee them, the shared records,
the audit log, token state."""

from wedsync.models.agencies import Agency, CoordinatorAssignment
from wedsync.models.audit import AuditLog, AuditOutcome
from wedsync.models.auth import UserTokenGeneration
from wedsync.models.idempotency import IdempotentRequest
from wedsync.models.records import LocationZone, Rsvp, RsvpStatus, Task, TaskStatus, TimelineItem
from wedsync.models.service_accounts import ApiScope, ServiceAccount, ServiceAccountKey
from wedsync.models.weddings import Member, Wedding, WeddingStatus

__all__ = [
    "Agency",
    "ApiScope",
    "AuditLog",
    "AuditOutcome",
    "CoordinatorAssignment",
    "IdempotentRequest",
    "LocationZone",
    "Member",
    "Rsvp",
    "RsvpStatus",
    "ServiceAccount",
    "ServiceAccountKey",
    "Task",
    "TaskStatus",
    "TimelineItem",
    "UserTokenGeneration",
    "Wedding",
    "WeddingStatus",
]
