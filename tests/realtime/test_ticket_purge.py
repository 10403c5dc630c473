from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.conf import settings

from realtime.models import RealtimeTicket
from realtime.services.tickets import ticket_issue
from realtime.tasks import purge_expired_tickets
from tests.personas import WeddingParty
from wedsync.celery import app
from wedsync.services.audit import ClientInfo


@pytest.mark.django_db
def test_purge_removes_only_tickets_expired_over_an_hour_ago(party: WeddingParty) -> None:
    client = ClientInfo(ip=None, user_agent="")
    with time_machine.travel(dt.datetime(2026, 6, 13, 10, 0, tzinfo=dt.UTC), tick=False) as traveller:
        ticket_issue(user=party.ana.user, client=client)
        traveller.shift(dt.timedelta(minutes=90))
        ticket_issue(user=party.ben.user, client=client)
        assert purge_expired_tickets.apply().get() == 1
    assert list(RealtimeTicket.objects.values_list("user_id", flat=True)) == [party.ben.user_id]


def test_every_scheduled_task_is_registered() -> None:
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled
    assert scheduled <= set(app.tasks)
