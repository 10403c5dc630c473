"""Writing the audit entries of accepted sockets in batches: a group commit per node.

Every accepted socket is audited (``realtime.connect``), and one committed INSERT per socket was a
large share of a reconnect storm's database time. Here each connect hands its entry to the node's
:class:`AuditBatcher` and waits until it is written; whatever arrives while a write is under way
goes into the next one, a single multi-row INSERT. So nothing changes for a client (its ``welcome``
still follows its committed audit row), nothing is left in memory to lose when the node stops
(no socket gets further than its entry's write), and under load the rows share commits.
Refusals are mostly written where they are decided; a load-shedding refusal is queued here with
:meth:`AuditBatcher.write_soon`, so that a loaded node answers before its row is committed.
"""

from __future__ import annotations

import asyncio
import weakref

import structlog
from channels.db import database_sync_to_async

from wedsync.models import AuditLog
from wedsync.services.audit import audit_entries_write

logger = structlog.get_logger(__name__)


class AuditBatcher:
    """One per event loop (see :func:`node_audit`)."""

    def __init__(self) -> None:
        self._pending: list[tuple[AuditLog, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, entry: AuditLog) -> None:
        """Return once ``entry`` is committed (with whichever others were waiting), or raise why not."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._pending.append((entry, written))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_pending(), name="audit-writer")
        # shield: a socket that goes away while waiting does not cancel the batch's write.
        await asyncio.shield(written)

    def write_soon(self, entry: AuditLog) -> None:
        """Queue ``entry`` for the next batch without waiting for it; a failed write is logged."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        written.add_done_callback(_logged_if_failed)
        self._pending.append((entry, written))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_pending(), name="audit-writer")

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await database_sync_to_async(audit_entries_write)(entries=[entry for entry, _ in batch])
            except Exception as exc:
                for _, written in batch:
                    if not written.done():
                        written.set_exception(exc)
            else:
                for _, written in batch:
                    if not written.done():
                        written.set_result(None)


def _logged_if_failed(written: asyncio.Future[None]) -> None:
    if not written.cancelled() and written.exception() is not None:
        logger.warning("audit.write_failed", error=repr(written.exception()))


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AuditBatcher] = weakref.WeakKeyDictionary()


def node_audit() -> AuditBatcher:
    loop = asyncio.get_running_loop()
    batcher = _per_loop.get(loop)
    if batcher is None:
        batcher = _per_loop[loop] = AuditBatcher()
    return batcher
