"""Weddings over the staff API (issue 20): who sees which, cursor pages, creating with an
Idempotency-Key, ETag and If-Match on changes, archiving; for members, coordinators and keys."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.factories import WeddingFactory
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from tests.presence.test_alerts_api import as_user
from wedsync.models import Agency, ApiScope, AuditLog, Wedding
from wedsync.refusals import Refused
from wedsync.services.service_accounts import service_account_create, service_account_key_issue
from wedsync.services.weddings import wedding_archive, wedding_update

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]

LISBON = zoneinfo.ZoneInfo("Europe/Lisbon")


def api() -> APIClient:
    return APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")


def new_wedding(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Rita & Joao",
        "date": "2027-06-12",
        "time_zone": "Europe/Lisbon",
        "ceremony_at": "2027-06-12T16:00:00+01:00",
        "venue_name": "Quinta da Luz",
        **overrides,
    }


@pytest.fixture
def cora(party: WeddingParty) -> User:
    return make_coordinator(party.wedding)


def key_for(*, scopes: list[str], agency: Agency | None = None, weddings: tuple[Wedding, ...] = ()) -> APIClient:
    account = service_account_create(
        name=f"CRM {'-'.join(scopes)}", scopes=scopes, agency=agency, weddings=weddings, actor=None
    )
    _key, raw = service_account_key_issue(account=account, name="prod", actor=None)
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


# --- list -------------------------------------------------------------------------------------------


def test_each_caller_lists_the_weddings_they_may_see(party: WeddingParty, cora: User) -> None:
    other = make_wedding_party().wedding
    member = as_user(api(), party.gil.user).get("/api/v1/weddings/").json()
    assert [w["id"] for w in member["results"]] == [party.wedding.pk]
    coordinator = as_user(api(), cora).get("/api/v1/weddings/").json()
    assert [w["id"] for w in coordinator["results"]] == [party.wedding.pk]
    everyone = as_user(api(), make_superuser()).get("/api/v1/weddings/").json()
    assert {w["id"] for w in everyone["results"]} == {party.wedding.pk, other.pk}
    keyed = key_for(scopes=["read"], weddings=(other,)).get("/api/v1/weddings/").json()
    assert [w["id"] for w in keyed["results"]] == [other.pk]


def test_filters_and_cursor_pages_are_stable_while_weddings_are_added() -> None:
    days = [dt.date(2027, 6, day) for day in (5, 12, 12, 19, 26)]
    weddings = [WeddingFactory(date=day, status="confirmed") for day in days]
    WeddingFactory(date=dt.date(2027, 6, 12), status="cancelled")
    client = as_user(api(), make_superuser())
    first = client.get("/api/v1/weddings/", {"page_size": "2", "status": "confirmed"}).json()
    assert [w["id"] for w in first["results"]] == [weddings[0].pk, weddings[1].pk] and first["previous"] is None
    WeddingFactory(date=dt.date(2027, 6, 1), status="confirmed")  # lands before the cursor: not in later pages
    second = client.get(first["next"]).json()
    assert [w["id"] for w in second["results"]] == [weddings[2].pk, weddings[3].pk]
    third = client.get(second["next"]).json()
    assert [w["id"] for w in third["results"]] == [weddings[4].pk] and third["next"] is None
    back = client.get(second["previous"]).json()
    assert [w["id"] for w in back["results"]] == [weddings[0].pk, weddings[1].pk]
    ranged = client.get("/api/v1/weddings/", {"date_after": "2027-06-12", "date_before": "2027-06-19"}).json()
    assert len(ranged["results"]) == 4  # the two confirmed of the 12th, the cancelled one, the 19th
    assert client.get("/api/v1/weddings/", {"cursor": "nonsense"}).status_code == 404
    bad = client.get("/api/v1/weddings/", {"page_size": "0", "status": "eloped"})
    assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"page_size", "status"}


def test_a_page_boundary_inside_a_day_neither_skips_nor_repeats_weddings() -> None:
    day = dt.date(2027, 6, 12)
    same_day = [WeddingFactory(date=day) for _ in range(4)]
    client = as_user(api(), make_superuser())
    first = client.get("/api/v1/weddings/", {"page_size": "2"}).json()
    assert [w["id"] for w in first["results"]] == [same_day[0].pk, same_day[1].pk]
    Wedding.objects.filter(pk=same_day[0].pk).update(archived_at=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    later = WeddingFactory(date=day)  # the same day, a higher id: after the boundary
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()
    assert [w["id"] for w in second["results"] + third["results"]] == [same_day[2].pk, same_day[3].pk, later.pk]


# --- create -----------------------------------------------------------------------------------------


def test_a_coordinator_creates_a_wedding_once_however_often_the_request_is_retried(cora: User) -> None:
    agency = Agency.objects.get(coordinators=cora)
    client = as_user(api(), cora)
    body = new_wedding(agency=agency.pk)
    first = client.post("/api/v1/weddings/", body, format="json", HTTP_IDEMPOTENCY_KEY="crm-42")
    assert first.status_code == 201, first.json()
    again = client.post("/api/v1/weddings/", body, format="json", HTTP_IDEMPOTENCY_KEY="crm-42")
    assert again.status_code == 201 and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert first["Location"] == again["Location"] == f"/api/v1/weddings/{first.json()['id']}/"
    assert Wedding.objects.filter(name="Rita & Joao").count() == 1
    reused = client.post("/api/v1/weddings/", new_wedding(name="Other"), format="json", HTTP_IDEMPOTENCY_KEY="crm-42")
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "invalid"
    missing = client.post("/api/v1/weddings/", body, format="json")
    assert missing.status_code == 428 and missing.json()["error"]["code"] == "precondition_required"
    created = Wedding.objects.get(pk=first.json()["id"])
    assert created.agency == agency and created.ceremony_at == dt.datetime(2027, 6, 12, 15, 0, tzinfo=dt.UTC)
    assert AuditLog.objects.filter(action="wedding.change", actor=cora, wedding_id=created.pk).count() == 1


def test_creating_needs_an_agency_of_ones_own_and_a_consistent_day(party: WeddingParty, cora: User) -> None:
    theirs = Agency.objects.create(name="Someone else's")
    client = as_user(api(), cora)
    other = client.post("/api/v1/weddings/", new_wedding(agency=theirs.pk), format="json", HTTP_IDEMPOTENCY_KEY="a")
    assert other.status_code == 403 and "agency whose weddings you oversee" in other.json()["error"]["message"]
    assert AuditLog.objects.filter(action="api.refuse", actor=cora, target="wedding:new").exists()
    mine = Agency.objects.get(coordinators=cora).pk
    off_day = new_wedding(agency=mine, ceremony_at="2027-06-13T16:00:00+01:00")
    wrong = client.post("/api/v1/weddings/", off_day, format="json", HTTP_IDEMPOTENCY_KEY="b")
    assert wrong.status_code == 422 and "ceremony_at" in wrong.json()["error"]["fields"]
    member = as_user(api(), party.priya.user).post(
        "/api/v1/weddings/", new_wedding(agency=mine), format="json", HTTP_IDEMPOTENCY_KEY="c"
    )
    assert member.status_code == 403 and member.json()["error"]["message"] == "You may not create weddings."


def test_a_key_creates_in_its_agency_only_with_the_weddings_scope() -> None:
    agency = Agency.objects.create(name="Luz Weddings")
    reader = key_for(scopes=[ApiScope.READ], agency=agency)
    refused = reader.post("/api/v1/weddings/", new_wedding(agency=agency.pk), format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert refused.status_code == 403 and "'weddings' scope" in refused.json()["error"]["message"]
    writer = key_for(scopes=[ApiScope.WEDDINGS], agency=agency)
    made = writer.post("/api/v1/weddings/", new_wedding(agency=agency.pk), format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert made.status_code == 201 and made.json()["agency"] == agency.pk


# --- retrieve, update, archive ----------------------------------------------------------------------


def test_a_method_a_path_lacks_is_405_for_a_key_too(party: WeddingParty) -> None:
    keyed = key_for(scopes=["read", "weddings"], weddings=(party.wedding,))
    gone = keyed.delete(f"/api/v1/weddings/{party.wedding.pk}/")
    assert gone.status_code == 405 and gone.json()["error"]["code"] == "invalid"
    assert keyed.options(f"/api/v1/weddings/{party.wedding.pk}/").status_code == 200


def test_a_stranger_is_refused_alike_whether_or_not_the_wedding_exists(party: WeddingParty) -> None:
    stranger = as_user(api(), make_wedding_party().priya.user)
    answers = [stranger.get(f"/api/v1/weddings/{pk}/") for pk in (party.wedding.pk, 987654)]
    assert [a.status_code for a in answers] == [403, 403] and answers[0].json() == answers[1].json()
    assert as_user(api(), make_superuser()).get("/api/v1/weddings/987654/").status_code == 404


def test_changes_need_the_etag_they_were_read_at(party: WeddingParty, cora: User) -> None:
    client = as_user(api(), cora)
    url = f"/api/v1/weddings/{party.wedding.pk}/"
    read = client.get(url)
    etag = read["ETag"]
    assert read.status_code == 200 and etag
    assert client.patch(url, {"venue_name": "Casa"}, format="json").status_code == 428
    changed = client.patch(url, {"venue_name": "Casa"}, format="json", HTTP_IF_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["venue_name"] == "Casa" and changed["ETag"] != etag
    stale = client.patch(url, {"venue_name": "Palacio"}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "conflict"
    assert Wedding.objects.get(pk=party.wedding.pk).venue_name == "Casa"
    planner = as_user(api(), party.priya.user)
    assert planner.get(url).status_code == 200  # members read their wedding
    assert planner.patch(url, {"venue_name": "X"}, format="json", HTTP_IF_MATCH=changed["ETag"]).status_code == 403


def test_archiving_is_idempotent_and_takes_the_wedding_out_of_lists(party: WeddingParty, cora: User) -> None:
    client = as_user(api(), cora)
    url = f"/api/v1/weddings/{party.wedding.pk}/archive/"
    first = client.post(url)
    assert first.status_code == 200 and first.json()["archived_at"]
    assert client.post(url).json()["archived_at"] == first.json()["archived_at"]
    assert client.get("/api/v1/weddings/").json()["results"] == []
    assert [w["id"] for w in client.get("/api/v1/weddings/", {"archived": "true"}).json()["results"]] == [
        party.wedding.pk
    ]
    assert AuditLog.objects.filter(action="wedding.change", details__op="archive").count() == 1


def test_text_postgresql_cannot_store_is_422_and_a_blank_name_is_invalid(party: WeddingParty, cora: User) -> None:
    client = as_user(api(), cora)
    agency = Agency.objects.get(coordinators=cora).pk
    nul = client.post(
        "/api/v1/weddings/", new_wedding(agency=agency, name="A\x00B"), format="json", HTTP_IDEMPOTENCY_KEY="n"
    )
    assert nul.status_code == 422 and "NUL" in nul.json()["error"]["message"]
    blank = client.post(
        "/api/v1/weddings/", new_wedding(agency=agency, name="\x1e "), format="json", HTTP_IDEMPOTENCY_KEY="b"
    )
    assert blank.status_code == 422 and set(blank.json()["error"]["fields"]) == {"name"}
    url = f"/api/v1/weddings/{party.wedding.pk}/"
    etag = client.get(url)["ETag"]
    escaped = '{"venue_name": "\\ud800"}'  # a lone surrogate, as JSON escapes it
    surrogate = client.patch(url, escaped, content_type="application/json", HTTP_IF_MATCH=etag)
    assert surrogate.status_code == 422 and surrogate.json()["error"]["code"] == "invalid"
    trimmed = client.patch(url, {"venue_name": "  Casa  "}, format="json", HTTP_IF_MATCH=etag)
    assert trimmed.status_code == 200 and trimmed.json()["venue_name"] == "Casa"
    assert not Wedding.objects.filter(name__contains="B").exclude(pk=party.wedding.pk).exists()


def test_a_wedding_deleted_after_the_access_check_is_refused_not_found(cora: User) -> None:
    gone = WeddingFactory()
    gone_id = gone.pk
    gone.delete()
    with pytest.raises(Refused) as archived:
        wedding_archive(wedding_id=gone_id, actor=cora)
    with pytest.raises(Refused) as updated:
        wedding_update(wedding_id=gone_id, changes={}, expected_etag='"1-1"', actor=cora)
    assert archived.value.code == updated.value.code == "not_found"
