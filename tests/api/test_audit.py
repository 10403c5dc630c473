"""The audit log over the staff API (issue 20): scoped like the admin, filterable, newest first in
cursor pages that neither skip nor repeat while entries are written."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User

from tests.api.test_weddings import api, key_for
from tests.factories import UserFactory
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from tests.presence.test_alerts_api import as_user
from wedsync.api.audit import ACTION_NAME
from wedsync.models import AuditLog, AuditOutcome, CoordinatorAssignment
from wedsync.services.audit import AuditAction, audit_record

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]

AUDIT = "/api/v1/audit/"


def entry(
    action: AuditAction, *, wedding_id: int | None, actor: User | None = None, outcome: str = "success"
) -> AuditLog:
    return audit_record(action=action, outcome=AuditOutcome(outcome), actor=actor, wedding_id=wedding_id)


def ids(answer: dict[str, object]) -> list[int]:
    results = answer["results"]
    assert isinstance(results, list)
    return [row["id"] for row in results]


def test_each_caller_reads_the_entries_of_the_weddings_they_oversee(party: WeddingParty) -> None:
    cora = make_coordinator(party.wedding)
    other = make_wedding_party().wedding
    ours = entry(AuditAction.MEMBER_ADD, wedding_id=party.wedding.pk, actor=party.priya.user)
    theirs = entry(AuditAction.MEMBER_ADD, wedding_id=other.pk)
    login = entry(AuditAction.ADMIN_LOGIN, wedding_id=None, actor=cora)
    made = {ours.pk, theirs.pk, login.pk}

    coordinator = as_user(api(), cora).get(AUDIT)
    assert coordinator.status_code == 200
    assert made & set(ids(coordinator.json())) == {ours.pk}  # entries of no wedding are the superusers'
    everyone = as_user(api(), make_superuser()).get(AUDIT).json()
    assert made <= set(ids(everyone))
    keyed = key_for(scopes=["read"], weddings=(other,)).get(AUDIT)
    assert keyed.status_code == 200 and made & set(ids(keyed.json())) == {theirs.pk}

    row = next(r for r in coordinator.json()["results"] if r["id"] == ours.pk)
    assert row["action"] == "member.add" and row["actor"] == party.priya.user.pk
    assert row["wedding"] == party.wedding.pk and row["outcome"] == "success" and row["details"] == {}


def test_members_anonymous_callers_and_keys_without_read_are_refused(party: WeddingParty) -> None:
    planner = as_user(api(), party.priya.user).get(AUDIT)
    assert planner.status_code == 403 and planner.json()["error"]["code"] == "forbidden"
    assert api().get(AUDIT).status_code == 401
    publisher = key_for(scopes=["publish"], weddings=(party.wedding,)).get(AUDIT)
    assert publisher.status_code == 403 and "'read' scope" in publisher.json()["error"]["message"]


def test_staff_need_the_audit_permission_the_admin_asks_for(party: WeddingParty) -> None:
    assigned = UserFactory(username="sol", is_staff=True)  # oversees by assignment, in no group
    CoordinatorAssignment.objects.create(wedding=party.wedding, coordinator=assigned)
    entry(AuditAction.MEMBER_ADD, wedding_id=party.wedding.pk)
    refused = as_user(api(), assigned).get(AUDIT)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert AuditLog.objects.filter(action="api.refuse", actor=assigned, target__contains="/api/v1/audit/").exists()


def test_forged_cursors_are_bad_cursors_not_errors(party: WeddingParty) -> None:
    client = as_user(api(), make_superuser())
    for forged in ("cD1hYmM=", "cD0=", "cD0xLjU="):  # p=abc, p=, p=1.5
        assert client.get(AUDIT, {"cursor": forged}).status_code == 404
    for forged in ("cD0lMDA=", "cD1hYmM="):  # p=<NUL>, p=abc
        assert client.get("/api/v1/weddings/", {"cursor": forged}).status_code == 404


def test_a_wedding_outside_ones_scope_reads_as_empty_as_one_that_does_not_exist(party: WeddingParty) -> None:
    cora = make_coordinator(party.wedding)
    other = make_wedding_party().wedding
    entry(AuditAction.MEMBER_ADD, wedding_id=other.pk)
    client = as_user(api(), cora)
    outside = client.get(AUDIT, {"wedding": other.pk})
    missing = client.get(AUDIT, {"wedding": 2**63 - 1})
    assert outside.status_code == missing.status_code == 200
    assert outside.json()["results"] == missing.json()["results"] == []


def test_filters_narrow_by_wedding_actor_action_outcome_and_time(party: WeddingParty) -> None:
    other = make_wedding_party().wedding
    priya, ana = party.priya.user, party.ana.user
    with time_machine.travel(dt.datetime(2027, 6, 12, 9, 0, tzinfo=dt.UTC), tick=False):
        early = entry(AuditAction.MEMBER_ADD, wedding_id=party.wedding.pk, actor=priya)
    with time_machine.travel(dt.datetime(2027, 6, 12, 12, 0, tzinfo=dt.UTC), tick=False):
        refused = entry(AuditAction.SUBSCRIBE_REFUSE, wedding_id=party.wedding.pk, actor=ana, outcome="refused")
        published = entry(AuditAction.PUBLISH_REFUSE, wedding_id=party.wedding.pk, actor=priya, outcome="refused")
        elsewhere = entry(AuditAction.MEMBER_ADD, wedding_id=other.pk, actor=priya)
    client = as_user(api(), make_superuser())

    def found(**query: Any) -> set[int]:
        answer = client.get(AUDIT, query)
        assert answer.status_code == 200, answer.json()
        return set(ids(answer.json())) & {early.pk, refused.pk, published.pk, elsewhere.pk}

    assert found(wedding=party.wedding.pk) == {early.pk, refused.pk, published.pk}
    assert found(actor=priya.pk) == {early.pk, published.pk, elsewhere.pk}
    assert found(action="member.add") == {early.pk, elsewhere.pk}
    assert found(action=["member.add", "realtime.subscribe.refuse"]) == {early.pk, refused.pk, elsewhere.pk}
    assert found(action_prefix="realtime.") == {refused.pk, published.pk}
    assert found(outcome="refused") == {refused.pk, published.pk}
    assert found(since="2027-06-12T10:00:00Z") == {refused.pk, published.pk, elsewhere.pk}
    assert found(until="2027-06-12T10:00:00Z") == {early.pk}
    assert found(wedding=party.wedding.pk, actor=priya.pk, outcome="refused") == {published.pk}


def test_pages_run_newest_first_without_skipping_or_repeating_while_entries_are_written(
    party: WeddingParty,
) -> None:
    first_five = [entry(AuditAction.MEMBER_CHANGE, wedding_id=party.wedding.pk) for _ in range(5)]
    client = as_user(api(), make_superuser())
    query: dict[str, Any] = {"wedding": party.wedding.pk, "action": "member.change", "page_size": 2}
    page = client.get(AUDIT, query).json()
    assert ids(page) == [first_five[4].pk, first_five[3].pk] and page["previous"] is None
    newer = entry(AuditAction.MEMBER_CHANGE, wedding_id=party.wedding.pk)  # lands before the cursor
    seen = ids(page)
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += ids(page)
    assert seen == [e.pk for e in reversed(first_five)] and newer.pk not in seen
    assert ids(client.get(AUDIT, query).json())[0] == newer.pk


def test_bad_queries_are_answered_with_the_fields_at_fault() -> None:
    client = as_user(api(), make_superuser())
    bad = client.get(AUDIT, {"wedding": "0", "outcome": "maybe", "since": "yesterday", "page_size": "501"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
    assert set(bad.json()["error"]["fields"]) == {"wedding", "outcome", "since", "page_size"}
    assert client.get(AUDIT, {"action_prefix": ""}).status_code == 400
    assert client.get(AUDIT, {"cursor": "nonsense"}).status_code == 404


def test_every_audit_action_can_be_asked_for_by_name() -> None:
    assert all(re.fullmatch(ACTION_NAME, action.value) for action in AuditAction)
