"""A wedding's event log over the staff API (issue 20): by seq or time, in pages, each caller seeing
exactly what their socket would (members their own audience; staff and keys a planner's, without
member-addressed events); strangers refused alike whether or not the wedding exists."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from rest_framework.test import APIClient

import realtime.selectors
from realtime.services.events import member_event_publish
from tests.personas import WeddingParty, make_coordinator, make_wedding_party
from tests.presence.test_alerts_api import as_user
from wedsync.models import AuditLog
from wedsync.services.service_accounts import service_account_create, service_account_key_issue

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")


def url(party: WeddingParty) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/events/"


def chat(party: WeddingParty, text: str, **kwargs) -> int:
    return member_event_publish(member=party.priya, type_name="chat.message", data={"text": text}, **kwargs).seq


def test_each_caller_reads_what_their_socket_would_see(party: WeddingParty) -> None:
    chat(party, "hello all")
    chat(party, "for carmen", to=[f"member:{party.carmen.pk}"])
    member_event_publish(member=party.paula, type_name="vendor.status", data={"activity": "en_route"})
    texts = {
        "guest": [
            e["data"].get("text", e["type"]) for e in as_user(api(), party.gil.user).get(url(party)).json()["events"]
        ],
        "caterer": [
            e["data"].get("text", e["type"]) for e in as_user(api(), party.carmen.user).get(url(party)).json()["events"]
        ],
        "coordinator": [
            e["data"].get("text", e["type"])
            for e in as_user(api(), make_coordinator(party.wedding)).get(url(party)).json()["events"]
        ],
    }
    assert texts == {
        "guest": ["hello all"],
        "caterer": ["hello all", "for carmen"],
        "coordinator": ["hello all", "vendor.status"],  # a planner's view, minus member-addressed events
    }


def test_a_page_reads_a_bounded_part_of_the_log_and_says_where_to_go_on(
    party: WeddingParty, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(realtime.selectors, "_REPLAY_CHUNK", 2)  # small, so a dozen events are many chunks
    monkeypatch.setattr(realtime.selectors, "_HISTORY_CHUNKS_MAX", 3)
    for i in range(10):
        chat(party, f"crew only {i}", to=["role:planner", "role:couple"])
    seen = chat(party, "for everyone")
    guest = as_user(api(), party.gil.user)
    early = guest.get(url(party)).json()
    assert early == {"events": [], "next_after": 6}  # three chunks of two read, none the guest's
    pages = [early]
    while pages[-1]["next_after"] is not None:
        pages.append(guest.get(url(party), {"after": pages[-1]["next_after"]}).json())
    assert [e["seq"] for page in pages for e in page["events"]] == [seen] and len(pages) == 2


def test_pages_by_seq_and_filters_by_type_and_time(party: WeddingParty) -> None:
    start = dt.datetime(2027, 1, 5, 12, 0, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False) as clock:
        for i in range(5):
            chat(party, f"m{i}")
            clock.shift(dt.timedelta(minutes=1))
    member_event_publish(member=party.paula, type_name="vendor.status", data={"activity": "at_venue"})
    client = as_user(api(), party.priya.user)
    first = client.get(url(party), {"limit": "2"}).json()
    assert [e["seq"] for e in first["events"]] == [1, 2] and first["next_after"] == 2
    second = client.get(url(party), {"limit": "2", "after": "2"}).json()
    assert [e["seq"] for e in second["events"]] == [3, 4]
    last = client.get(url(party), {"after": "4"}).json()
    assert [e["seq"] for e in last["events"]] == [5, 6] and last["next_after"] is None
    chats = client.get(url(party), {"type": "vendor.status"}).json()["events"]
    assert [e["type"] for e in chats] == ["vendor.status"]
    window = client.get(url(party), {"since": "2027-01-05T12:01:00Z", "until": "2027-01-05T12:03:00Z"}).json()
    assert [e["data"]["text"] for e in window["events"]] == ["m1", "m2"]
    assert [e["seq"] for e in client.get(url(party), {"before": "3"}).json()["events"]] == [1, 2]


def test_a_key_reads_its_weddings_log_and_strangers_are_refused_alike(party: WeddingParty) -> None:
    chat(party, "hello all")
    account = service_account_create(name="CRM", scopes=["read"], weddings=[party.wedding], actor=None)
    _key, raw = service_account_key_issue(account=account, name="prod", actor=None)
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert [e["data"]["text"] for e in client.get(url(party)).json()["events"]] == ["hello all"]
    stranger = as_user(api(), make_wedding_party().gil.user)
    answers = [stranger.get(url(party)), stranger.get("/api/v1/weddings/987654/events/")]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json()["error"]["code"] == answers[1].json()["error"]["code"] == "forbidden"
    assert (
        AuditLog.objects.filter(action="realtime.subscribe.refuse", details__reason="history: not visible").count() == 2
    )


def test_a_rare_type_is_found_a_window_of_seqs_at_a_time(party: WeddingParty, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realtime.selectors, "_HISTORY_WINDOW", 3)  # each chunk spans 3 seqs at most
    monkeypatch.setattr(realtime.selectors, "_HISTORY_CHUNKS_MAX", 3)
    for i in range(10):
        chat(party, f"m{i}")
    rare = member_event_publish(member=party.paula, type_name="vendor.status", data={"activity": "at_venue"}).seq
    planner = as_user(api(), party.priya.user)
    first = planner.get(url(party), {"type": "vendor.status"}).json()
    assert first == {"events": [], "next_after": 9}  # three windows of three seqs, none of the type
    second = planner.get(url(party), {"type": "vendor.status", "after": "9"}).json()
    assert [e["seq"] for e in second["events"]] == [rare] and second["next_after"] is None
