"""The core domain: weddings and their members, the agencies that oversee them, the shared records,
the audit log, token state."""

from wedsync.models.agencies import Agency, CoordinatorAssignment
from wedsync.models.audit import AuditLog, AuditOutcome
from wedsync.models.auth import UserTokenGeneration
from wedsync.models.records import LocationZone, Rsvp, RsvpStatus, Task, TaskStatus, TimelineItem
from wedsync.models.weddings import Member, Wedding, WeddingStatus

__all__ = [
    "Agency",
    "AuditLog",
    "AuditOutcome",
    "CoordinatorAssignment",
    "LocationZone",
    "Member",
    "Rsvp",
    "RsvpStatus",
    "Task",
    "TaskStatus",
    "TimelineItem",
    "UserTokenGeneration",
    "Wedding",
    "WeddingStatus",
]
