"""The sync engine: every change of a shared record goes through here, from a socket's ``sync``, the
REST API and the admin alike (PROTOCOL.md section 7, docs/decisions/0027).

``ops`` holds what every op shares, ``sync`` one op and a batch, ``notify`` their events and notices,
``conflicts`` closing a kept conflict, ``submit`` who acts and the one door for a client's ops.
"""

from records.services.conflicts import conflict_resolve
from records.services.ops import MAX_BATCH_OPS, SyncRefused, SyncRequest, SyncResult, deleted_refusal, record_strategy
from records.services.submit import actor_for_member, actor_for_staff, records_sync_submit, socket_records_sync
from records.services.sync import record_sync, records_sync_batch

__all__ = [
    "MAX_BATCH_OPS",
    "SyncRefused",
    "SyncRequest",
    "SyncResult",
    "actor_for_member",
    "actor_for_staff",
    "conflict_resolve",
    "deleted_refusal",
    "record_strategy",
    "record_sync",
    "records_sync_batch",
    "records_sync_submit",
    "socket_records_sync",
]
