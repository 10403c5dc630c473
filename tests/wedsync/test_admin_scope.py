"""Staff scope in the oversight panel (docs/decisions/0022): a coordinator's lists, pages, actions
and form choices hold the weddings they oversee and nothing else; superusers see everything; a
direct URL outside the scope is a 404 like a missing id, and is audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from monitoring.models import (
    DeadLetter,
    DeadLetterState,
    Escalation,
    EscalationStatus,
    EscalationSubject,
    EventWebhook,
)
from presence.models import Alert, Emergency
from realtime.services.events import member_event_publish
from records.models import Conflict
from tests.factories import AlertFactory, RsvpFactory, TaskFactory, TimelineItemFactory, UserFactory
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from wedsync.models import Agency, AuditLog, AuditOutcome, CoordinatorAssignment, Member, Task, TimelineItem, Wedding
from wedsync.services.audit import AuditAction, audit_record
from wedsync.services.service_accounts import service_account_create

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]

# Every wedding-scoped page of the panel: "app.model" as in the admin's URL names.
SCOPED = (
    "wedsync.wedding",
    "wedsync.member",
    "wedsync.timelineitem",
    "wedsync.task",
    "wedsync.rsvp",
    "wedsync.auditlog",
    "records.conflict",
    "presence.alert",
    "presence.emergency",
    "monitoring.escalation",
    "monitoring.deadletter",
    "monitoring.eventwebhook",
)


@dataclass(frozen=True)
class Side:
    """One agency's wedding with one row of every scoped kind."""

    party: WeddingParty
    rows: dict[str, Model]

    @property
    def wedding(self) -> Wedding:
        return self.party.wedding


def _side(party: WeddingParty) -> Side:
    alert = AlertFactory(wedding=party.wedding, member=party.olu, severity="critical")
    published = member_event_publish(member=party.carmen, type_name="emergency.alert", data={"message": "Fire"})
    escalation = Escalation.objects.create(
        wedding=party.wedding,
        subject=EscalationSubject.ALERT,
        alert=alert,
        payload={"alert": alert.pk},
        status=EscalationStatus.DEAD_LETTERED,
    )
    entry = audit_record(
        action=AuditAction.MEMBER_CHANGE, outcome=AuditOutcome.SUCCESS, wedding_id=party.wedding.pk, target="x"
    )
    task = TaskFactory(wedding=party.wedding, assignee=party.priya)
    return Side(
        party=party,
        rows={
            "wedsync.wedding": party.wedding,
            "wedsync.member": party.gil,
            "wedsync.timelineitem": TimelineItemFactory(wedding=party.wedding),
            "wedsync.task": task,
            "wedsync.rsvp": RsvpFactory(guest=party.gil),
            "wedsync.auditlog": entry,
            "records.conflict": Conflict.objects.create(
                wedding=party.wedding,
                kind="task",
                record_id=task.pk,
                strategy="manual",
                base_version=1,
                version=1,
                theirs={"status": "todo"},
                mine={"status": "done"},
                member=party.ana,
            ),
            "presence.alert": alert,
            "presence.emergency": Emergency.objects.get(raised_event_id=published.id),
            "monitoring.escalation": escalation,
            "monitoring.deadletter": DeadLetter.objects.create(
                escalation=escalation, payload=escalation.payload, last_error="HTTP 502", attempts=6
            ),
            "monitoring.eventwebhook": EventWebhook.objects.create(
                service_account=service_account_create(
                    name=f"CRM of {party.wedding.slug}", scopes=["webhooks"], weddings=[party.wedding], actor=None
                ),
                wedding=party.wedding,
                url="https://crm.example.com/hooks",
                secret="whsec_test",
            ),
        },
    )


@pytest.fixture
def luz() -> Side:
    return _side(make_wedding_party())


@pytest.fixture
def mar() -> Side:
    return _side(make_wedding_party())


@pytest.fixture
def cora(luz: Side, mar: Side) -> User:
    make_coordinator(mar.wedding, name="max", agency="Mar")
    return make_coordinator(luz.wedding, agency="Luz")


def logged_in(user: User) -> Client:
    client = Client(REMOTE_ADDR="203.0.113.9")
    client.force_login(user)
    return client


def url(model: str, view: str, *args: object) -> str:
    return reverse(f"admin:{model.replace('.', '_')}_{view}", args=args)


def listed(client: Client, model: str) -> set[Any]:
    response = client.get(url(model, "changelist"))
    assert response.status_code == 200, response.content[:2000]
    return set(response.context["cl"].queryset.values_list("pk", flat=True))


# --- Lists -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", SCOPED)
def test_a_coordinators_list_holds_their_weddings_rows_only(luz: Side, mar: Side, cora: User, model: str) -> None:
    rows = listed(logged_in(cora), model)
    assert luz.rows[model].pk in rows
    assert mar.rows[model].pk not in rows


@pytest.mark.parametrize("model", SCOPED)
def test_a_superusers_list_holds_every_weddings_rows(luz: Side, mar: Side, cora: User, model: str) -> None:
    rows = listed(logged_in(make_superuser()), model)
    assert {luz.rows[model].pk, mar.rows[model].pk} <= rows


def test_the_audit_log_of_no_wedding_is_the_superusers(luz: Side, cora: User) -> None:
    login = audit_record(action=AuditAction.TOKEN_ISSUE, outcome=AuditOutcome.SUCCESS, actor=cora)
    assert login.pk not in listed(logged_in(cora), "wedsync.auditlog")
    assert login.pk in listed(logged_in(make_superuser()), "wedsync.auditlog")


def test_an_assigned_wedding_is_listed_with_its_rows(luz: Side, mar: Side, cora: User) -> None:
    CoordinatorAssignment.objects.create(wedding=mar.wedding, coordinator=cora)
    client = logged_in(cora)
    for model in SCOPED:
        assert mar.rows[model].pk in listed(client, model), model


# --- Pages by URL ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", SCOPED)
def test_an_out_of_scope_page_is_not_found_and_audited(luz: Side, mar: Side, cora: User, model: str) -> None:
    client = logged_in(cora)
    theirs = mar.rows[model]
    assert client.get(url(model, "change", luz.rows[model].pk)).status_code == 200
    for view in ("change", "delete", "history"):
        response = client.get(url(model, view, theirs.pk))
        assert response.status_code == 404, (view, response.status_code)
    refusals = AuditLog.objects.filter(action="admin.refuse").order_by("id")
    assert [entry.details["view"] for entry in refusals] == ["change", "delete", "history"]
    entry = refusals.first()
    assert entry is not None
    assert (entry.actor_id, entry.outcome, entry.wedding_id, entry.target, entry.ip) == (
        cora.pk,
        "refused",
        mar.wedding.pk,
        f"{model}:{theirs.pk}",
        "203.0.113.9",
    )


def test_a_post_to_an_out_of_scope_page_changes_nothing(luz: Side, mar: Side, cora: User) -> None:
    item = mar.rows["wedsync.timelineitem"]
    assert isinstance(item, TimelineItem)
    response = logged_in(cora).post(
        url("wedsync.timelineitem", "change", item.pk),
        {"wedding": mar.wedding.pk, "title": "Moved", "starts_at_0": "2027-01-01", "starts_at_1": "12:00:00"},
    )
    assert response.status_code == 404
    assert TimelineItem.objects.get(pk=item.pk).title == item.title
    assert AuditLog.objects.filter(action="admin.refuse", wedding_id=mar.wedding.pk).exists()  # not rolled back
    assert (
        logged_in(cora).post(url("wedsync.task", "delete", mar.rows["wedsync.task"].pk), {"post": "yes"}).status_code
        == 404
    )
    assert Task.objects.filter(pk=mar.rows["wedsync.task"].pk).exists()


def test_a_missing_id_is_the_same_404_and_not_audited(luz: Side, cora: User) -> None:
    response = logged_in(cora).get(url("wedsync.wedding", "change", 999999999))
    assert response.status_code == 404
    assert not AuditLog.objects.filter(action="admin.refuse").exists()


# --- Actions -----------------------------------------------------------------------------------------

ACTIONS = {
    "acknowledge": ("presence.alert", lambda pk: Alert.objects.get(pk=pk).acknowledged_at is not None),
    "resolve": ("presence.emergency", lambda pk: Emergency.objects.get(pk=pk).resolved_at is not None),
    "retry": ("monitoring.deadletter", lambda pk: DeadLetter.objects.get(pk=pk).state == DeadLetterState.RETRYING),
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_action_reaches_the_coordinators_rows_only_and_the_others_are_audited(
    luz: Side, mar: Side, cora: User, action: str
) -> None:
    model, done = ACTIONS[action]
    ours, theirs = luz.rows[model].pk, mar.rows[model].pk
    logged_in(cora).post(url(model, "changelist"), {"action": action, "_selected_action": [ours, theirs]})
    assert done(ours)
    assert not done(theirs)
    entry = AuditLog.objects.get(action="admin.refuse")
    assert (entry.wedding_id, entry.details["view"], entry.details["ids"]) == (
        mar.wedding.pk,
        f"action:{action}",
        [str(theirs)],
    )


@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_action_needs_its_permission(luz: Side, cora: User, action: str) -> None:
    model, done = ACTIONS[action]
    app_label, model_name = model.split(".")
    viewers = Group.objects.create(name="viewers")
    viewers.permissions.set(Permission.objects.filter(content_type__app_label=app_label, codename=f"view_{model_name}"))
    cora.groups.set([viewers])
    client = logged_in(cora)
    page = client.get(url(model, "changelist"))
    assert page.status_code == 200
    form = page.context["action_form"]  # None when no action is left
    assert form is None or action not in dict(form.fields["action"].choices)
    client.post(url(model, "changelist"), {"action": action, "_selected_action": [luz.rows[model].pk]})
    assert not done(luz.rows[model].pk)


def test_delete_selected_deletes_the_coordinators_rows_only(luz: Side, mar: Side, cora: User) -> None:
    ours, theirs = luz.rows["wedsync.task"].pk, mar.rows["wedsync.task"].pk
    logged_in(cora).post(
        url("wedsync.task", "changelist"),
        {"action": "delete_selected", "_selected_action": [ours, theirs], "post": "yes"},
    )
    assert set(Task.objects.filter(pk__in=[ours, theirs]).values_list("pk", flat=True)) == {theirs}


# --- Form choices ------------------------------------------------------------------------------------


def choices(client: Client, model: str, field: str, *args: object) -> set[int]:
    view = "change" if args else "add"
    form = client.get(url(model, view, *args)).context["adminform"].form
    return {int(str(value)) for value, _label in form.fields[field].choices if value != ""}


def test_a_coordinator_picks_only_their_weddings_members_and_people(luz: Side, mar: Side, cora: User) -> None:
    client = logged_in(cora)
    assert choices(client, "wedsync.member", "wedding") == {luz.wedding.pk}
    users = choices(client, "wedsync.member", "user")
    assert luz.party.gil.user_id in users and mar.party.gil.user_id not in users
    assert choices(client, "wedsync.task", "wedding") == {luz.wedding.pk}
    assignees = choices(client, "wedsync.task", "assignee")
    assert assignees == {member.pk for member in luz.party.members}
    assert choices(client, "wedsync.rsvp", "guest") == {luz.party.gil.pk}
    item = luz.rows["wedsync.timelineitem"].pk
    vendors = choices(client, "wedsync.timelineitem", "assigned_vendors", item)
    assert luz.party.paula.pk in vendors and mar.party.paula.pk not in vendors


def test_a_coordinator_cannot_add_a_member_to_another_agencys_wedding(luz: Side, mar: Side, cora: User) -> None:
    stranger = UserFactory(username="new-guest")
    response = logged_in(cora).post(
        url("wedsync.member", "add"),
        {"user": stranger.pk, "wedding": mar.wedding.pk, "role": "guest", "is_active": "on"},
    )
    assert response.status_code == 200
    assert "wedding" in response.context["adminform"].form.errors
    assert not Member.objects.filter(user=stranger).exists()
    response = logged_in(cora).post(
        url("wedsync.member", "add"),
        {"user": stranger.pk, "wedding": luz.wedding.pk, "role": "guest", "is_active": "on"},
    )
    assert response.status_code == 302
    assert Member.objects.filter(user=stranger, wedding=luz.wedding).exists()


def test_a_coordinator_cannot_move_a_record_to_another_agencys_wedding(luz: Side, mar: Side, cora: User) -> None:
    task = luz.rows["wedsync.task"]
    client = logged_in(cora)
    # A record's wedding is fixed once created (shown, read-only); a new one's is theirs to pick.
    assert "wedding" not in client.get(url("wedsync.task", "change", task.pk)).context["adminform"].form.fields
    client.post(
        url("wedsync.task", "change", task.pk),
        {"wedding": mar.wedding.pk, "title": "Moved", "status": "todo", "base_version": 1},
    )
    assert Task.objects.get(pk=task.pk).wedding_id == luz.wedding.pk
    response = client.post(url("wedsync.task", "add"), {"wedding": mar.wedding.pk, "title": "New", "status": "todo"})
    assert response.status_code == 200
    assert "wedding" in response.context["adminform"].form.errors
    assert not Task.objects.filter(title="New").exists()


def test_the_autocomplete_offers_the_coordinators_weddings_and_people_only(luz: Side, mar: Side, cora: User) -> None:
    client = logged_in(cora)

    def offered(field: str) -> set[int]:
        response = client.get(
            reverse("admin:autocomplete"),
            {"app_label": "wedsync", "model_name": "member", "field_name": field, "term": ""},
        )
        assert response.status_code == 200
        return {int(result["id"]) for result in response.json()["results"]}

    assert offered("wedding") == {luz.wedding.pk}
    people = offered("user")
    assert luz.party.priya.user_id in people and mar.party.priya.user_id not in people


# --- Weddings, agencies and what belongs to no wedding ---------------------------------------------------


def _wedding_form(**fields: object) -> dict[str, object]:
    form: dict[str, object] = {
        "name": "Inês & Rui",
        "slug": "ines-rui",
        "date": "2027-06-12",
        "time_zone": "Europe/Lisbon",
        "ceremony_at_0": "2027-06-12",
        "ceremony_at_1": "16:00:00",
        "status": "planning",
        **fields,
    }
    for prefix in ("members", "alerts", "coordinator_assignments", "record_strategies"):
        form.update({f"{prefix}-TOTAL_FORMS": 0, f"{prefix}-INITIAL_FORMS": 0})
    return form


def test_a_coordinators_new_wedding_lands_in_one_of_their_agencies(luz: Side, mar: Side, cora: User) -> None:
    client = logged_in(cora)
    assert choices(client, "wedsync.wedding", "agency") == {Agency.objects.get(name="Luz").pk}
    refused = client.post(url("wedsync.wedding", "add"), _wedding_form(agency=Agency.objects.get(name="Mar").pk))
    assert "agency" in refused.context["adminform"].form.errors
    missing = client.post(url("wedsync.wedding", "add"), _wedding_form())
    assert "agency" in missing.context["adminform"].form.errors
    assert not Wedding.objects.filter(slug="ines-rui").exists()
    added = client.post(url("wedsync.wedding", "add"), _wedding_form(agency=Agency.objects.get(name="Luz").pk))
    assert added.status_code == 302
    assert Wedding.objects.get(slug="ines-rui").agency == Agency.objects.get(name="Luz")


def test_a_coordinator_with_assignments_only_cannot_add_weddings(luz: Side, mar: Side) -> None:
    helper = make_coordinator(name="hana", agency="Hana")
    Agency.objects.get(name="Hana").coordinators.remove(helper)
    CoordinatorAssignment.objects.create(wedding=luz.wedding, coordinator=helper)
    client = logged_in(helper)
    assert client.get(url("wedsync.wedding", "add")).status_code == 403
    assert listed(client, "wedsync.wedding") == {luz.wedding.pk}


def test_only_a_superuser_moves_a_wedding_between_agencies_or_assigns_coordinators(
    luz: Side, mar: Side, cora: User
) -> None:
    page = logged_in(cora).get(url("wedsync.wedding", "change", luz.wedding.pk))
    form = page.context["adminform"].form
    assert "agency" not in form.fields  # shown, read-only
    assert "coordinator_assignments-TOTAL_FORMS" not in page.content.decode()
    page = logged_in(make_superuser()).get(url("wedsync.wedding", "change", luz.wedding.pk))
    assert "agency" in page.context["adminform"].form.fields
    assert "coordinator_assignments-TOTAL_FORMS" in page.content.decode()


@pytest.mark.parametrize("model", ["wedsync.agency", "realtime.realtimeticket", "wedsync.usertokengeneration"])
def test_what_belongs_to_no_wedding_is_the_superusers(cora: User, model: str) -> None:
    app_label, model_name = model.split(".")
    # Even a coordinator granted every permission on the model.
    cora.user_permissions.set(
        Permission.objects.filter(content_type__app_label=app_label, content_type__model=model_name)
    )
    assert cora.has_perm(f"{app_label}.view_{model_name}")
    assert logged_in(cora).get(url(model, "changelist")).status_code == 403
    assert logged_in(make_superuser()).get(url(model, "changelist")).status_code == 200


def test_a_coordinator_looks_up_their_weddings_people_only(luz: Side, mar: Side, cora: User) -> None:
    client = logged_in(cora)
    users = listed(client, "auth.user")
    assert luz.party.gil.user_id in users and mar.party.gil.user_id not in users
    assert client.get(url("auth.user", "change", mar.party.gil.user_id)).status_code == 404
    assert AuditLog.objects.get(action="admin.refuse").target == f"auth.user:{mar.party.gil.user_id}"


def test_a_coordinators_index_lists_the_scoped_pages_and_not_the_superusers(cora: User) -> None:
    page = logged_in(cora).get(reverse("admin:index"))
    assert page.status_code == 200
    shown = {
        f"{app['app_label']}.{entry['object_name'].lower()}"
        for app in page.context["app_list"]
        for entry in app["models"]
    }
    assert set(SCOPED) | {"auth.user"} == shown
