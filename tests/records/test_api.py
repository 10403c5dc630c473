"""The REST API of shared records: the state snapshot, records by kind, If-Match and Idempotency-Key,
batches and the conflict inbox, over the same engine as the socket's ``sync`` (against the socket:
tests/records/test_api_vs_socket.py)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from realtime.models import Event, WeddingStream
from records.models import Conflict, Strategy, SyncOpResult, WeddingStrategy
from records.services import SyncRequest, actor_for_member, record_sync
from tests.factories import MemberFactory, RsvpFactory, TaskFactory, TimelineItemFactory, UserFactory
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from wedsync.models import AuditLog, Member, Rsvp, Task, TimelineItem
from wedsync.services.auth import access_token_issue

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


def call(
    who: Member | Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    if_match: str | int | None = None,
    key: str | None = None,
    **query: Any,
) -> Any:
    """One request as a member (or a user), with If-Match and Idempotency-Key when given."""
    user = who.user if isinstance(who, Member) else who
    api = APIClient(REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="wedsync-tests/1.0")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_issue(user=user)}")
    headers = {}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"' if isinstance(if_match, int) else if_match
    if key is not None:
        headers["Idempotency-Key"] = key
    if method == "get":
        return api.get(path, query, headers=headers)
    return getattr(api, method)(path, body, format="json", headers=headers)


def url(party: WeddingParty, tail: str) -> str:
    return f"/api/v1/weddings/{party.wedding.pk}/{tail}"


def record_url(party: WeddingParty, kind: str, record_id: int | None = None) -> str:
    return url(party, f"records/{kind}/" + ("" if record_id is None else f"{record_id}/"))


@pytest.fixture
def item(party: WeddingParty) -> TimelineItem:
    item = TimelineItemFactory(wedding=party.wedding, title="First dance", ceremony_notes="Rings after vows")
    item.assigned_vendors.set([party.carmen])
    return item


@pytest.fixture
def records(party: WeddingParty, item: TimelineItem) -> dict[str, Any]:
    other_guest = MemberFactory(user=UserFactory(username="gwen"), wedding=party.wedding, role="guest")
    return {
        "item": item,
        "flora_task": TaskFactory(wedding=party.wedding, assignee=party.flora, title="Bouquets"),
        "task": TaskFactory(wedding=party.wedding, title="Seating plan"),
        "gil_rsvp": RsvpFactory(guest=party.gil),
        "gwen_rsvp": RsvpFactory(guest=other_guest),
    }


def ids(body: dict[str, Any], kind: str) -> list[int]:
    return [record["id"] for record in body["records"][kind]]


# --- the state snapshot --------------------------------------------------------------------------------


def test_the_state_holds_every_record_the_caller_may_see_at_the_streams_seq(
    party: WeddingParty, records: dict[str, Any]
) -> None:
    record_sync(
        actor=actor_for_member(party.priya),
        request=SyncRequest(kind="task", record_id=records["task"].pk, base_version=1, changes={"status": "done"}),
    )
    body = call(party.priya, "get", url(party, "state/")).json()
    stream = WeddingStream.objects.get(wedding=party.wedding)
    assert (body["wedding"], body["seq"], body["epoch"]) == (party.wedding.pk, stream.last_seq, stream.epoch)
    assert body["seq"] > 0
    assert ids(body, "task") == [records["flora_task"].pk, records["task"].pk]
    assert ids(body, "rsvp") == [records["gil_rsvp"].pk, records["gwen_rsvp"].pk]
    [item] = body["records"]["timeline_item"]
    assert (item["version"], item["values"]["ceremony_notes"]) == (1, "Rings after vows")
    assert [t["version"] for t in body["records"]["task"]] == [1, 2]


@pytest.mark.parametrize(
    ("role", "tasks", "rsvps", "ceremony"),
    [
        ("carmen", [], [], False),
        ("flora", ["flora_task"], [], False),
        ("gil", [], ["gil_rsvp"], False),
        ("paula", [], [], True),
    ],
)
def test_the_state_leaves_out_what_a_role_may_not_see(
    party: WeddingParty, records: dict[str, Any], role: str, tasks: list[str], rsvps: list[str], ceremony: bool
) -> None:
    body = call(getattr(party, role), "get", url(party, "state/")).json()
    assert ids(body, "task") == [records[name].pk for name in tasks]
    assert ids(body, "rsvp") == [records[name].pk for name in rsvps]
    [item] = body["records"]["timeline_item"]
    assert ("ceremony_notes" in item["values"]) is ceremony
    assert item["values"]["title"] == "First dance"


def test_staff_who_oversee_the_wedding_read_a_planners_state_and_strangers_are_refused(party: WeddingParty) -> None:
    other = make_wedding_party(slug="other")
    cora = make_coordinator(party.wedding)
    assert call(cora, "get", url(party, "state/")).status_code == 200
    refused = call(other.priya, "get", url(party, "state/"))
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert AuditLog.objects.filter(action="record.refuse", actor=other.priya.user).count() == 1
    missing = call(make_superuser(), "get", "/api/v1/weddings/987654321/state/")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


# --- lists and single records --------------------------------------------------------------------------


def test_a_list_leaves_out_hidden_fields_and_pages_by_id(party: WeddingParty, records: dict[str, Any]) -> None:
    second = TimelineItemFactory(wedding=party.wedding, title="Cake", ceremony_notes="none")
    planner = call(party.priya, "get", record_url(party, "timeline_item")).json()
    assert planner["record"] == "timeline_item" and planner["more"] is False
    assert [r["values"]["ceremony_notes"] for r in planner["records"]] == ["Rings after vows", "none"]
    caterer = call(party.carmen, "get", record_url(party, "timeline_item"), limit=1).json()
    assert ([r["id"] for r in caterer["records"]], caterer["more"]) == ([records["item"].pk], True)
    assert "ceremony_notes" not in caterer["records"][0]["values"]
    rest = call(party.carmen, "get", record_url(party, "timeline_item"), after=records["item"].pk).json()
    assert ([r["id"] for r in rest["records"]], rest["more"]) == ([second.pk], False)
    assert call(party.gil, "get", record_url(party, "rsvp")).json()["records"] == [
        {
            "id": records["gil_rsvp"].pk,
            "version": 1,
            "values": {"guest": party.gil.pk, "status": "pending", "meal": "", "plus_ones": 0, "dietary_notes": ""},
        }
    ]
    unknown = call(party.priya, "get", record_url(party, "seating_chart"))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")


def test_a_record_carries_its_version_as_etag_and_others_records_are_refused(
    party: WeddingParty, records: dict[str, Any]
) -> None:
    response = call(party.carmen, "get", record_url(party, "timeline_item", records["item"].pk))
    assert (response.status_code, response["ETag"]) == (200, '"1"')
    assert "ceremony_notes" not in response.json()["values"]
    refused = call(party.carmen, "get", record_url(party, "task", records["flora_task"].pk))
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert AuditLog.objects.filter(action="record.refuse", target=f"task:{records['flora_task'].pk}").exists()
    assert call(party.priya, "get", record_url(party, "task", 10**12)).status_code == 404


# --- writes: If-Match, outcomes, Idempotency-Key ---------------------------------------------------------


def test_a_create_answers_201_with_the_sync_reply_and_where_the_record_is(party: WeddingParty) -> None:
    body = {"title": "Cake", "starts_at": "2026-06-13T19:00:00+02:00", "assigned_vendors": [party.carmen.pk]}
    response = call(party.priya, "post", record_url(party, "timeline_item"), body, key="phone-1")
    assert response.status_code == 201, response.json()
    reply = response.json()
    assert (reply["outcome"], reply["version"], reply["op_id"], reply["values"]["title"]) == (
        "applied",
        1,
        "phone-1",
        "Cake",
    )
    assert response["Location"] == record_url(party, "timeline_item", reply["id"])
    assert (response["Idempotency-Key"], response["ETag"]) == ("phone-1", '"1"')
    assert reply["seq"] == max(Event.objects.filter(type="record.created").values_list("seq", flat=True))
    made_up = call(party.priya, "post", record_url(party, "task"), {"title": "Candles"})
    assert made_up.status_code == 201 and made_up["Idempotency-Key"].startswith("rest-")
    assert SyncOpResult.objects.filter(op_id=made_up["Idempotency-Key"]).exists()


def test_a_resent_idempotency_key_answers_the_first_outcome_and_changes_nothing(
    party: WeddingParty, item: TimelineItem
) -> None:
    first = call(party.priya, "post", record_url(party, "task"), {"title": "Candles"}, key="k1")
    events = Event.objects.count()
    again = call(party.priya, "post", record_url(party, "task"), {"title": "Candles"}, key="k1")
    assert again.status_code == 201 and again.json() == {**first.json(), "duplicate": True}
    assert (Task.objects.filter(title="Candles").count(), Event.objects.count()) == (1, events)
    path = record_url(party, "timeline_item", item.pk)
    changed = call(party.priya, "patch", path, {"title": "Dance"}, if_match=1, key="k2")
    repeat = call(party.priya, "patch", path, {"title": "Dance"}, if_match=1, key="k2")
    assert repeat.json() == {**changed.json(), "duplicate": True}
    item.refresh_from_db()
    assert item.version == 2
    elsewhere = call(
        party.priya, "patch", record_url(party, "task", first.json()["id"]), {"title": "x"}, if_match=1, key="k2"
    )
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (422, "invalid")
    assert "Idempotency-Key" in elsewhere.json()["error"]["message"]


def test_a_change_needs_if_match_and_a_version_that_exists(party: WeddingParty, item: TimelineItem) -> None:
    path = record_url(party, "timeline_item", item.pk)
    missing = call(party.priya, "patch", path, {"title": "Dance"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (428, "precondition_required")
    assert "If-Match" in missing.json()["error"]["message"]
    assert call(party.priya, "delete", path).status_code == 428
    malformed = call(party.priya, "patch", path, {"title": "Dance"}, if_match="*")
    assert (malformed.status_code, list(malformed.json()["error"]["fields"])) == (400, ["If-Match"])
    future = call(party.priya, "patch", path, {"title": "Dance"}, if_match=7)
    assert (future.status_code, future.json()["error"]["code"]) == (422, "invalid")
    item.refresh_from_db()
    assert (item.title, item.version) == ("First dance", 1)
    for tag in ('"1"', "1", 'W/"1"'):
        assert call(party.priya, "patch", path, {"notes": tag}, if_match=tag).status_code == 200


def test_a_stale_if_match_is_resolved_by_the_strategy_not_refused(party: WeddingParty, item: TimelineItem) -> None:
    path = record_url(party, "timeline_item", item.pk)
    call(party.priya, "patch", path, {"title": "Planner's"}, if_match=1)
    merged = call(party.paula, "patch", path, {"location": "reception_hall"}, if_match=1)
    assert (merged.status_code, merged.json()["outcome"], merged["ETag"]) == (200, "merged", '"3"')
    lost = call(party.paula, "patch", path, {"title": "Paula's"}, if_match=1)
    assert (lost.status_code, lost.json()["outcome"], lost.json()["lost"]) == (200, "overridden", ["title"])
    assert lost.json()["values"]["title"] == "Planner's"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"colour": "red"}, 422, "invalid"),
        ({"title": ""}, 422, "invalid"),
        ({"starts_at": "0001-01-01T00:00:00+01:00"}, 422, "invalid"),
        ({"ends_at": "2000-01-01T00:00:00Z"}, 422, "invalid"),
        ({"notes": "nul\u0000"}, 422, "invalid"),
        ([1, 2], 400, "invalid"),
        ({}, 422, "invalid"),
    ],
)
def test_a_change_that_cannot_apply_is_refused_and_writes_nothing(
    party: WeddingParty, item: TimelineItem, body: Any, status: int, code: str
) -> None:
    response = call(party.priya, "patch", record_url(party, "timeline_item", item.pk), body, if_match=1)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    item.refresh_from_db()
    assert item.version == 1 and not Event.objects.exists()


def test_a_new_record_without_its_required_fields_is_invalid(party: WeddingParty) -> None:
    for kind, body, field in (("timeline_item", {"title": "Cake"}, "starts_at"), ("task", {}, "title")):
        response = call(party.priya, "post", record_url(party, kind), body)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid")
        assert response.json()["error"]["message"].startswith(f"{field}:")
    assert not TimelineItem.objects.exists() and not Task.objects.exists()


def test_permission_refusals_are_403_and_audited(party: WeddingParty, item: TimelineItem) -> None:
    path = record_url(party, "timeline_item", item.pk)
    refused = call(party.carmen, "patch", path, {"ceremony_notes": "peek"}, if_match=1)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert call(party.olu, "patch", path, {"title": "x"}, if_match=1).status_code == 403  # no edit_timeline
    assert AuditLog.objects.filter(action="record.refuse", target=f"timeline_item:{item.pk}").count() == 2


def test_a_guest_edits_only_their_own_rsvp(party: WeddingParty, records: dict[str, Any]) -> None:
    mine = call(
        party.gil, "patch", record_url(party, "rsvp", records["gil_rsvp"].pk), {"status": "attending"}, if_match=1
    )
    assert (mine.status_code, mine.json()["outcome"]) == (200, "applied")
    theirs = call(
        party.gil, "patch", record_url(party, "rsvp", records["gwen_rsvp"].pk), {"status": "declined"}, if_match=1
    )
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (403, "forbidden")
    gone = call(party.gil, "delete", record_url(party, "rsvp", records["gil_rsvp"].pk), if_match=2)
    assert gone.status_code == 403
    assert list(Rsvp.objects.order_by("guest_id").values_list("status", flat=True)) == ["attending", "pending"]
    Rsvp.objects.filter(guest=party.gil).delete()
    created = call(party.gil, "post", record_url(party, "rsvp"), {"status": "maybe"})
    assert created.status_code == 201 and created.json()["values"]["guest"] == party.gil.pk
    for_another = call(party.gil, "post", record_url(party, "rsvp"), {"guest": records["gwen_rsvp"].guest_id})
    assert for_another.status_code == 403


def test_a_deleted_record_is_not_found_with_the_deletions_seq(party: WeddingParty, item: TimelineItem) -> None:
    path = record_url(party, "timeline_item", item.pk)
    deleted = call(party.priya, "delete", path, if_match=1)
    assert (deleted.status_code, deleted.json()["deleted"], deleted.json()["outcome"]) == (200, True, "applied")
    seq = min(Event.objects.filter(type="record.deleted").values_list("seq", flat=True))
    for response in (call(party.paula, "patch", path, {"notes": "late"}, if_match=1), call(party.priya, "get", path)):
        assert response.status_code == 404
        assert (response.json()["error"]["code"], response.json()["error"]["deleted_seq"]) == ("not_found", seq)


def test_rest_writes_spend_the_members_sync_budget(party: WeddingParty, records: dict[str, Any], settings) -> None:
    settings.REALTIME_RATE_LIMITS = {**settings.REALTIME_RATE_LIMITS, "guest": 1}
    path = record_url(party, "rsvp", records["gil_rsvp"].pk)
    assert call(party.gil, "patch", path, {"meal": "fish"}, if_match=1, key="m1").status_code == 200
    limited = call(party.gil, "patch", path, {"meal": "beef"}, if_match=2, key="m2")
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited")
    assert int(limited["Retry-After"]) >= 1 and limited.json()["error"]["retry_after"] > 0
    assert call(party.gil, "patch", path, {"meal": "fish"}, if_match=1, key="m1").json()["duplicate"] is True
    assert AuditLog.objects.filter(action="realtime.rate_limit.refuse", actor=party.gil.user).count() == 1


# --- batches ---------------------------------------------------------------------------------------------


def test_a_batch_applies_all_or_nothing_and_names_the_failing_op(party: WeddingParty, records: dict[str, Any]) -> None:
    item, task = records["item"], records["task"]
    ops = [
        {"record": "timeline_item", "id": item.pk, "base_version": 1, "changes": {"title": "Shifted"}},
        {"record": "task", "id": task.pk, "base_version": 1, "changes": {"status": "nope"}},
    ]
    failed = call(party.priya, "post", url(party, "records/batch/"), {"ops": ops})
    assert failed.status_code == 422
    error = failed.json()["error"]
    assert (error["code"], error["op"]) == ("invalid", 1) and error["message"].startswith("ops[1]:")
    item.refresh_from_db()
    assert item.title == "First dance" and not Event.objects.exists()
    ops[1]["changes"] = {"status": "done"}
    done = call(party.priya, "post", url(party, "records/batch/"), {"ops": ops}, key="shift")
    assert done.status_code == 200
    assert [(r["outcome"], r["op_id"]) for r in done.json()["results"]] == [
        ("applied", "shift:0"),
        ("applied", "shift:1"),
    ]
    again = call(party.priya, "post", url(party, "records/batch/"), {"ops": ops}, key="shift")
    assert [r.get("duplicate") for r in again.json()["results"]] == [True, True]
    task.refresh_from_db()
    assert (task.status, task.version) == ("done", 2)


def test_a_batch_with_a_stale_op_that_would_lose_is_a_409_naming_it(party: WeddingParty) -> None:
    task = TaskFactory(wedding=party.wedding, title="Bouquets")
    call(party.ana, "patch", record_url(party, "task", task.pk), {"title": "Couple's"}, if_match=1)
    ops = [
        {"record": "task", "id": None, "changes": {"title": "New"}},
        {"record": "task", "id": task.pk, "base_version": 1, "changes": {"title": "Planner's"}},
    ]
    response = call(party.priya, "post", url(party, "records/batch/"), {"ops": ops})
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["op"], error["outcome"], error["version"]) == ("conflict", 1, "overridden", 2)
    assert not Task.objects.filter(title="New").exists()
    too_many = call(party.priya, "post", url(party, "records/batch/"), {"ops": [ops[0]] * 51})
    assert (too_many.status_code, list(too_many.json()["error"]["fields"])) == (400, ["ops"])


# --- conflicts ---------------------------------------------------------------------------------------


@pytest.fixture
def conflict(party: WeddingParty, item: TimelineItem) -> dict[str, Any]:
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy=Strategy.MANUAL)
    path = record_url(party, "timeline_item", item.pk)
    call(party.paula, "patch", path, {"title": "Paula's"}, if_match=1)
    response = call(party.priya, "patch", path, {"title": "Planner's", "ceremony_notes": "Vows first"}, if_match=1)
    assert response.status_code == 409
    return response.json()


def test_a_change_kept_as_a_conflict_is_409_with_the_conflict(
    party: WeddingParty, item: TimelineItem, conflict: dict[str, Any]
) -> None:
    assert (conflict["outcome"], conflict["error"]["code"]) == ("conflict", "conflict")
    assert conflict["conflict"] == conflict["error"]["conflict"] == Conflict.objects.get().pk
    assert conflict["values"]["title"] == "Paula's"
    item.refresh_from_db()
    assert (item.title, item.version) == ("Paula's", 2)


def test_conflicts_are_listed_to_resolvers_and_to_those_concerned_without_hidden_fields(
    party: WeddingParty, conflict: dict[str, Any]
) -> None:
    [listed] = call(party.ana, "get", url(party, "conflicts/")).json()["conflicts"]
    assert (listed["id"], listed["status"], listed["record"], listed["strategy"]) == (
        conflict["conflict"],
        "open",
        "timeline_item",
        "manual",
    )
    assert listed["mine"] == {"title": "Planner's", "ceremony_notes": "Vows first"}
    assert (listed["member"], listed["against"]) == (party.priya.pk, [party.paula.pk])
    assert call(party.paula, "get", url(party, "conflicts/")).json()["conflicts"][0]["id"] == conflict["conflict"]
    assert call(party.carmen, "get", url(party, "conflicts/")).json()["conflicts"] == []
    assert call(party.ana, "get", url(party, "conflicts/"), status="resolved").json()["conflicts"] == []
    assert len(call(party.ana, "get", url(party, "conflicts/"), status="all").json()["conflicts"]) == 1
    bad = call(party.ana, "get", url(party, "conflicts/"), status="closed")
    assert (bad.status_code, list(bad.json()["error"]["fields"])) == (400, ["status"])


def test_hidden_fields_of_a_conflict_are_left_out_for_roles_without_them(
    party: WeddingParty, item: TimelineItem
) -> None:
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy=Strategy.MANUAL)
    path = record_url(party, "timeline_item", item.pk)
    call(party.carmen, "patch", path, {"notes": "Caterer's"}, if_match=1)
    call(party.priya, "patch", path, {"notes": "Planner's", "ceremony_notes": "secret"}, if_match=1)
    [seen] = call(party.carmen, "get", url(party, "conflicts/")).json()["conflicts"]
    assert seen["mine"] == {"notes": "Planner's"}


def test_resolving_needs_manage_members_and_applies_through_the_engine(
    party: WeddingParty, item: TimelineItem, conflict: dict[str, Any]
) -> None:
    path = url(party, f"conflicts/{conflict['conflict']}/resolve/")
    refused = call(party.paula, "post", path, {"resolution": "mine"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    invalid = call(party.ana, "post", path, {"resolution": "custom", "values": {"title": ""}})
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (422, "invalid")
    resolved = call(party.ana, "post", path, {"resolution": "custom", "values": {"title": "Both"}})
    assert resolved.status_code == 200
    body = resolved.json()
    assert (body["conflict"]["status"], body["conflict"]["resolution"]) == ("resolved", "custom")
    assert (body["result"]["outcome"], body["result"]["values"]["title"]) == ("applied", "Both")
    item.refresh_from_db()
    assert (item.title, item.version) == ("Both", 3)
    assert Event.objects.filter(type="conflict.resolved").exists()
    again = call(party.ana, "post", path, {"resolution": "theirs"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "conflict")
    nothing = call(party.ana, "post", url(party, "conflicts/999999999/resolve/"), {"resolution": "theirs"})
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (404, "not_found")
