from __future__ import annotations

from celery import shared_task

from realtime.services.tickets import tickets_purge_expired


@shared_task(name="realtime.tasks.purge_expired_tickets", ignore_result=True)
def purge_expired_tickets() -> int:
    return tickets_purge_expired()
