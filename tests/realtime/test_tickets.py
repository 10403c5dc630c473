"""Socket tickets: single use, 60 s, bound to the user's token generation."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.urls import reverse
from rest_framework.test import APIClient

from realtime.models import RealtimeTicket
from realtime.services.tickets import TicketRefused, ticket_consume, ticket_issue
from tests.concurrency import race
from tests.personas import WeddingParty
from wedsync.services.audit import ClientInfo
from wedsync.services.auth import access_token_issue, tokens_revoke_for_user

CLIENT = ClientInfo(ip="203.0.113.9", user_agent="browser")


@pytest.mark.django_db
def test_the_api_issues_a_ticket_for_an_authenticated_user(party: WeddingParty) -> None:
    api = APIClient()
    assert api.post(reverse("realtime-ticket")).status_code == 401
    response = api.post(
        reverse("realtime-ticket"), HTTP_AUTHORIZATION=f"Bearer {access_token_issue(user=party.ana.user)}"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["expires_in"] == 60
    assert body["url"] == f"/ws/v1/?ticket={body['ticket']}"
    assert ticket_consume(raw=body["ticket"]).user == party.ana.user


@pytest.mark.django_db
def test_only_the_hash_is_stored(party: WeddingParty) -> None:
    raw, _ttl = ticket_issue(user=party.ana.user, client=CLIENT)
    stored = RealtimeTicket.objects.get()
    assert raw not in stored.ticket_hash and len(stored.ticket_hash) == 64


@pytest.mark.django_db
def test_a_ticket_works_once(party: WeddingParty) -> None:
    raw, _ttl = ticket_issue(user=party.ana.user, client=CLIENT)
    assert ticket_consume(raw=raw).user == party.ana.user
    with pytest.raises(TicketRefused) as refused:
        ticket_consume(raw=raw)
    assert refused.value.reason == "used"


@pytest.mark.django_db
def test_a_ticket_expires_after_sixty_seconds(party: WeddingParty) -> None:
    with time_machine.travel(dt.datetime(2026, 6, 13, 12, 0, tzinfo=dt.UTC), tick=False) as traveller:
        fresh, _ttl = ticket_issue(user=party.ana.user, client=CLIENT)
        stale, _ttl = ticket_issue(user=party.ana.user, client=CLIENT)
        traveller.shift(dt.timedelta(seconds=59))
        assert ticket_consume(raw=fresh).user == party.ana.user
        traveller.shift(dt.timedelta(seconds=2))
        with pytest.raises(TicketRefused) as refused:
            ticket_consume(raw=stale)
    assert refused.value.reason == "expired"


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["", "made-up", "x" * 500])
def test_unknown_tickets_are_refused(raw: str) -> None:
    with pytest.raises(TicketRefused) as refused:
        ticket_consume(raw=raw)
    assert refused.value.reason == "unknown"


@pytest.mark.django_db
def test_revoking_the_users_tokens_revokes_their_tickets(party: WeddingParty) -> None:
    raw, _ttl = ticket_issue(user=party.paula.user, client=CLIENT)
    tokens_revoke_for_user(user_id=party.paula.user_id, reason="test")
    with pytest.raises(TicketRefused) as refused:
        ticket_consume(raw=raw)
    assert refused.value.reason == "revoked"


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_racing_sockets_cannot_both_use_one_ticket(party: WeddingParty) -> None:
    raw, _ttl = ticket_issue(user=party.ana.user, client=CLIENT)
    results = race(lambda: ticket_consume(raw=raw), threads=8, expected=(TicketRefused,))
    outcomes = [result.reason if isinstance(result, TicketRefused) else "accepted" for result in results]
    assert sorted(outcomes) == ["accepted"] + ["used"] * 7
