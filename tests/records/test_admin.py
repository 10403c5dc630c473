"""The oversight panel and shared records: admin edits and deletes go through the sync engine (they
reach sockets, and a stale form resolves like any stale edit), the conflict inbox resolves through
it and tells everyone, a coordinator acts on their own weddings only, and each wedding's strategy
is chosen on its page (audited)."""

from __future__ import annotations

import importlib
from html.parser import HTMLParser
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.apps import apps as global_apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.contrib.auth.models import Permission as AuthPermission
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from realtime.models import Event
from records.models import Conflict, RecordTombstone, WeddingStrategy
from records.services import SyncRequest, SyncResult, actor_for_member, record_sync
from tests.factories import TaskFactory, TimelineItemFactory
from tests.personas import WeddingParty, make_coordinator, make_superuser, make_wedding_party
from wedsync.models import AuditLog, Member, Task, TimelineItem
from wedsync.permissions import Role
from wedsync.services.agencies import COORDINATORS_GROUP

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


# --- a small browser: the main form of an admin page as the page would post it ------------------------


class _FormFields(HTMLParser):
    """Every value the page's main form would post: inputs (checked boxes only), selected options
    (the first of a single select when none is), textareas; not the inline formsets' templates."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.data: dict[str, list[str]] = {}
        self._select: tuple[str, bool, list[str], list[str]] | None = None  # name, multiple, options, chosen
        self._textarea: str | None = None

    def _add(self, name: str | None, value: str) -> None:
        if name and "__prefix__" not in name:
            self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        attrs = {key: value or "" for key, value in attributes}
        if tag == "form" and attrs.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        if tag == "input" and attrs.get("type", "text") not in ("submit", "button", "image", "file"):
            if attrs.get("type") not in ("checkbox", "radio") or "checked" in attrs:
                self._add(attrs.get("name"), attrs.get("value", "on" if attrs.get("type") == "checkbox" else ""))
        elif tag == "select":
            self._select = (attrs.get("name", ""), "multiple" in attrs, [], [])
        elif tag == "option" and self._select is not None:
            self._select[2].append(attrs.get("value", ""))
            if "selected" in attrs:
                self._select[3].append(attrs.get("value", ""))
        elif tag == "textarea":
            self._textarea = attrs.get("name", "")
            self._add(self._textarea, "")

    def handle_data(self, data: str) -> None:
        if self._textarea is not None and "__prefix__" not in self._textarea:
            self.data[self._textarea][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self._textarea is not None:
            if "__prefix__" not in self._textarea:
                self.data[self._textarea][-1] = self.data[self._textarea][-1].removeprefix("\n")
            self._textarea = None
        elif tag == "select" and self._select is not None:
            name, multiple, options, chosen = self._select
            for value in chosen or ([] if multiple or not options else [options[0]]):
                self._add(name, value)
            self._select = None


def page_form(client: Client, path: str) -> dict[str, list[str]]:
    response = client.get(path)
    assert response.status_code == 200, response.content[:2000]
    model = response.context["opts"].model_name
    parser = _FormFields(f"{model}_form")
    parser.feed(response.content.decode())
    return parser.data


def history_of(record: Any) -> list[str]:
    """The record's admin history, oldest first, as the history page words it."""
    entries = LogEntry.objects.filter(object_id=str(record.pk), content_type__model=record._meta.model_name)
    return [entry.get_change_message() for entry in entries.order_by("action_time", "pk")]


def said(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_url(model: str, pk: int) -> str:
    return reverse(f"admin:{model.replace('.', '_')}_change", args=[pk])


def sync(member: Member, kind: str, record_id: int, base: int, **changes: Any) -> SyncResult:
    request = SyncRequest(kind=kind, record_id=record_id, base_version=base, changes=changes)
    return record_sync(actor=actor_for_member(member), request=request)


def ceremony_item(party: WeddingParty) -> TimelineItem:
    item = TimelineItemFactory(wedding=party.wedding, title="First dance", ceremony_notes="Rings after vows")
    item.assigned_vendors.set([party.carmen])
    return item


def edit(client: Client, model: str, pk: int, **fields: Any) -> Any:
    """Open the record's page, change ``fields`` and save, as a coordinator in a browser would."""
    data: dict[str, Any] = page_form(client, change_url(model, pk))
    data.update({name: [value] if not isinstance(value, list) else value for name, value in fields.items()})
    return client.post(change_url(model, pk), data)


def coordinator_client(party: WeddingParty) -> Client:
    return logged_in(make_coordinator(party.wedding))


@pytest.fixture
def coordinator(party: WeddingParty) -> User:
    return make_coordinator(party.wedding)


# --- edits reach sockets --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_admin_edit_reaches_the_records_audience_as_record_updated(party: WeddingParty, sockets) -> None:
    item = await database_sync_to_async(ceremony_item)(party)
    planner, caterer, guest = [await sockets(member) for member in (party.priya, party.carmen, party.gil)]
    for client in (planner, caterer, guest):
        await client.subscribe(party.wedding.pk)
    admin = await database_sync_to_async(coordinator_client)(party)

    def save() -> tuple[int, list[str]]:
        response = edit(admin, "wedsync.timelineitem", item.pk, title="First dance, 21:00")
        return response.status_code, said(response)

    status, messages = await database_sync_to_async(save)()
    assert status == 302 and messages[0].startswith("Applied: the timeline item")
    seen = await planner.receive()
    assert (seen["type"], seen["data"]["outcome"], seen["data"]["changed"], seen["data"]["version"]) == (
        "record.updated",
        "applied",
        ["title"],
        2,
    )
    assert seen["data"]["actor"] == {"member": None, "role": "planner", "staff": True}
    assert seen["data"]["values"]["ceremony_notes"] == "Rings after vows"
    hers = await caterer.receive()
    assert hers["type"] == "record.updated" and hers["data"]["values"]["title"] == "First dance, 21:00"
    assert "ceremony_notes" not in hers["data"]["values"]
    guests = await guest.receive()  # every role may view the timeline, so every role hears of it
    assert guests["data"] == hers["data"]
    for client in (planner, caterer, guest):
        assert await client.nothing_more()


# --- stale forms resolve like any stale edit -----------------------------------------------------------


def test_a_stale_form_merges_with_what_changed_since_and_reverts_nothing(
    party: WeddingParty, coordinator: User
) -> None:
    item = ceremony_item(party)
    admin = logged_in(coordinator)
    data = page_form(admin, change_url("wedsync.timelineitem", item.pk))
    assert data["base_version"] == ["1"] and data["initial-title"] == ["First dance"]
    sync(party.ana, "timeline_item", item.pk, 1, notes="Bring the rings")  # while the page is open
    data["title"] = ["First dance at nine"]
    response = admin.post(change_url("wedsync.timelineitem", item.pk), data)
    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.title, item.notes, item.version) == ("First dance at nine", "Bring the rings", 3)
    assert said(response)[0].startswith("Merged: ")
    updated = Event.objects.filter(type="record.updated").order_by("seq").last()
    assert updated is not None and (updated.data["outcome"], updated.data["changed"]) == ("merged", ["title"])
    # The history names what the engine changed: the title, not the notes the couple wrote meanwhile.
    assert history_of(item) == ["Changed Title."]


def test_a_stale_form_loses_to_a_higher_rank_under_role_hierarchy(party: WeddingParty, coordinator: User) -> None:
    task = TaskFactory(wedding=party.wedding, assignee=party.flora)
    admin = logged_in(coordinator)
    data = page_form(admin, change_url("wedsync.task", task.pk))
    sync(party.ana, "task", task.pk, 1, status="blocked")  # the couple outranks staff (a planner's rank)
    data["status"] = ["done"]
    response = admin.post(change_url("wedsync.task", task.pk), data)
    assert response.status_code == 302 and response["Location"] == change_url("wedsync.task", task.pk)
    task.refresh_from_db()
    assert (task.status, task.version) == ("blocked", 2)
    assert said(response)[0].startswith("Overridden: ")


def test_a_stale_form_under_manual_is_kept_as_a_conflict(party: WeddingParty, coordinator: User) -> None:
    WeddingStrategy.objects.create(wedding=party.wedding, kind="timeline_item", strategy="manual")
    item = ceremony_item(party)
    admin = logged_in(coordinator)
    data = page_form(admin, change_url("wedsync.timelineitem", item.pk))
    sync(party.ana, "timeline_item", item.pk, 1, title="Our first dance")
    data["title"] = ["First dance at nine"]
    response = admin.post(change_url("wedsync.timelineitem", item.pk), data)
    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.title, item.version) == ("Our first dance", 2)
    conflict = Conflict.objects.get()
    assert (conflict.mine, conflict.theirs, conflict.user, conflict.member) == (
        {"title": "First dance at nine"},
        {"title": "Our first dance"},
        coordinator,
        None,
    )
    assert conflict.against == [party.ana.pk]
    message = said(response)[0]
    assert message.startswith("Conflict: ") and change_url("records.conflict", conflict.pk) in message
    kept = Event.objects.filter(type="record.conflict", data__conflict=conflict.pk)
    assert history_of(item) == [f"Kept as conflict {conflict.pk}: the record is unchanged."]
    # The timeline item's audience: every role, in two parts by ceremony details.
    assert {role for event in kept for role in event.audience_roles} == {role.value for role in Role}


def test_a_refused_add_shows_the_form_again_with_what_was_typed_and_why(party: WeddingParty, coordinator: User) -> None:
    admin = logged_in(coordinator)
    add = reverse("admin:wedsync_timelineitem_add")
    data = page_form(admin, add)
    data.update(
        wedding=[str(party.wedding.pk)],
        title=["Fireworks over the lake"],
        starts_at_0=["2026-06-13"],
        starts_at_1=["22:00:00"],
        notes=["Sparklers for everyone. " * 200],  # longer than a record's notes may be (4,000)
    )
    response = admin.post(add, data)
    assert response.status_code == 200  # the page again, not a redirect to an empty form
    form = response.context["adminform"].form
    assert form.errors == {"notes": ["Not saved: changes: Expected `str` of length <= 4000 - at `$.notes`"]}
    assert b'value="Fireworks over the lake"' in response.content
    assert not TimelineItem.objects.filter(title="Fireworks over the lake").exists()
    assert not Event.objects.exists() and not LogEntry.objects.exists()


def test_a_form_that_does_not_say_its_version_is_refused(party: WeddingParty, coordinator: User) -> None:
    task = TaskFactory(wedding=party.wedding)
    admin = logged_in(coordinator)
    data = page_form(admin, change_url("wedsync.task", task.pk))
    del data["base_version"]
    data["title"] = ["Call the florist"]
    response = admin.post(change_url("wedsync.task", task.pk), data)
    assert response.status_code == 200 and b"which version it showed" in response.content
    task.refresh_from_db()
    assert task.version == 1 and task.title != "Call the florist"


def test_an_admin_add_and_delete_are_engine_ops_with_events_and_a_tombstone(
    party: WeddingParty, coordinator: User
) -> None:
    admin = logged_in(coordinator)
    add = reverse("admin:wedsync_task_add")
    data = page_form(admin, add)
    data.update(wedding=[str(party.wedding.pk)], title=["Call the florist"], assignee=[str(party.flora.pk)])
    response = admin.post(add, data)
    assert response.status_code == 302, said(response)
    task = Task.objects.get(title="Call the florist")
    created = Event.objects.get(type="record.created")
    assert (created.data["id"], created.audience_roles, created.audience_members) == (
        task.pk,
        ["couple", "planner"],
        [party.flora.pk],
    )
    response = admin.post(reverse("admin:wedsync_task_delete", args=[task.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Task.objects.filter(pk=task.pk).exists()
    deleted = Event.objects.get(type="record.deleted")
    assert RecordTombstone.objects.get(kind="task", record_id=task.pk).seq == deleted.seq
    audited = AuditLog.objects.filter(action="record.change", target=f"task:{task.pk}").order_by("id")
    assert [entry.details.get("deleted", False) for entry in audited] == [False, True]


# --- the conflict inbox --------------------------------------------------------------------------------


def open_conflict(party: WeddingParty, item: TimelineItem) -> Conflict:
    """Ana and Priya both retitle the item from version 1 under manual: Priya's edit is kept."""
    WeddingStrategy.objects.update_or_create(
        wedding=party.wedding, kind="timeline_item", defaults={"strategy": "manual"}
    )
    sync(party.ana, "timeline_item", item.pk, 1, title="Our first dance")
    result = sync(party.priya, "timeline_item", item.pk, 1, title="First dance at nine")
    return Conflict.objects.get(pk=result.reply["conflict"])


@pytest.mark.django_db(transaction=True)
async def test_resolving_from_the_admin_applies_and_tells_everyone_concerned(party: WeddingParty, sockets) -> None:
    item = await database_sync_to_async(ceremony_item)(party)
    conflict = await database_sync_to_async(open_conflict)(party, item)
    couple, planner, caterer, guest = [await sockets(m) for m in (party.ana, party.priya, party.carmen, party.gil)]
    for client in (couple, planner, caterer, guest):
        await client.subscribe(party.wedding.pk)
    admin = await database_sync_to_async(coordinator_client)(party)

    def resolve() -> Any:
        data = page_form(admin, change_url("records.conflict", conflict.pk))
        data.update(resolve_with=["custom"], merged_values=['{"title": "First dance, 21:00"}'])
        return admin.post(change_url("records.conflict", conflict.pk), data)

    response = await database_sync_to_async(resolve)()
    assert response.status_code == 302 and response["Location"] == reverse("admin:records_conflict_changelist")
    for client in (couple, planner, caterer, guest):
        updated, resolved = await client.receive(), await client.receive()
        assert (updated["type"], updated["data"]["values"]["title"]) == ("record.updated", "First dance, 21:00")
        assert (resolved["type"], resolved["data"]["conflict"], resolved["data"]["resolution"]) == (
            "conflict.resolved",
            conflict.pk,
            "custom",
        )
        assert await client.nothing_more()
    await database_sync_to_async(conflict.refresh_from_db)()
    assert (conflict.status, conflict.resolution, conflict.resolved_values["title"]) == (
        "resolved",
        "custom",
        "First dance, 21:00",
    )


def test_keeping_theirs_from_the_list_changes_nothing_and_is_audited(party: WeddingParty, coordinator: User) -> None:
    item = ceremony_item(party)
    conflict = open_conflict(party, item)
    response = logged_in(coordinator).post(
        reverse("admin:records_conflict_changelist"), {"action": "keep_theirs", "_selected_action": [conflict.pk]}
    )
    assert response.status_code == 302
    conflict.refresh_from_db()
    item.refresh_from_db()
    assert (conflict.status, conflict.resolution, conflict.resolved_by, item.title) == (
        "resolved",
        "theirs",
        coordinator,
        "Our first dance",
    )
    assert Event.objects.filter(type="conflict.resolved", data__conflict=conflict.pk).exists()
    assert AuditLog.objects.get(action="record.conflict.resolve").target == f"conflict:{conflict.pk}"


def test_merged_values_must_be_given_and_a_resolved_conflict_is_read_only(
    party: WeddingParty, coordinator: User
) -> None:
    conflict = open_conflict(party, ceremony_item(party))
    admin = logged_in(coordinator)
    data = page_form(admin, change_url("records.conflict", conflict.pk))
    assert data["resolve_with"] == ["theirs"]
    data.update(resolve_with=["custom"], merged_values=["{}"])
    response = admin.post(change_url("records.conflict", conflict.pk), data)
    assert response.status_code == 200 and "merged_values" in response.context["adminform"].form.errors
    data.update(resolve_with=["mine"])
    assert admin.post(change_url("records.conflict", conflict.pk), data).status_code == 302
    conflict.refresh_from_db()
    assert (conflict.status, conflict.resolution) == ("resolved", "mine")
    assert TimelineItem.objects.get(pk=conflict.record_id).title == "First dance at nine"
    page = admin.get(change_url("records.conflict", conflict.pk))
    assert page.status_code == 200 and "resolve_with" not in page.content.decode()
    assert admin.post(change_url("records.conflict", conflict.pk), data).status_code == 403


def test_a_coordinator_of_another_agency_neither_sees_nor_resolves_a_conflict() -> None:
    ours, also_ours, theirs = make_wedding_party(), make_wedding_party(), make_wedding_party()
    cora = make_coordinator(ours.wedding, also_ours.wedding, name="cora", agency="Luz")
    make_coordinator(theirs.wedding, name="max", agency="Mar")
    conflict = open_conflict(theirs, ceremony_item(theirs))
    mine = [open_conflict(party, ceremony_item(party)) for party in (ours, also_ours)]
    client = logged_in(cora)
    listing = client.get(reverse("admin:records_conflict_changelist"))
    assert set(listing.context["cl"].queryset.values_list("pk", flat=True)) == {c.pk for c in mine}
    # The wedding filter offers their weddings only (it shows once there are two to choose from).
    weddings = next(spec for spec in listing.context["cl"].filter_specs if spec.field_path == "wedding")
    assert {pk for pk, _name in weddings.lookup_choices} == {ours.wedding.pk, also_ours.wedding.pk}
    assert client.get(change_url("records.conflict", conflict.pk)).status_code == 404
    posted = client.post(change_url("records.conflict", conflict.pk), {"resolve_with": "theirs"})
    assert posted.status_code == 404
    client.post(
        reverse("admin:records_conflict_changelist"), {"action": "keep_theirs", "_selected_action": [conflict.pk]}
    )
    conflict.refresh_from_db()
    assert conflict.status == "open"
    refusals = AuditLog.objects.filter(action="admin.refuse", wedding_id=theirs.wedding.pk)
    assert [entry.details["view"] for entry in refusals.order_by("id")] == ["change", "change", "action:keep_theirs"]
    superuser = logged_in(make_superuser())
    listed = superuser.get(reverse("admin:records_conflict_changelist")).context["cl"].queryset
    assert {conflict.pk, *(c.pk for c in mine)} <= set(listed.values_list("pk", flat=True))


# --- strategies on the wedding page ----------------------------------------------------------------------


def test_a_strategy_chosen_on_the_wedding_page_applies_and_every_change_is_audited(
    party: WeddingParty, coordinator: User
) -> None:
    admin = logged_in(coordinator)
    wedding_page = change_url("wedsync.wedding", party.wedding.pk)
    data = page_form(admin, wedding_page)
    assert data["record_strategies-TOTAL_FORMS"] == ["0"]
    data.update(
        {
            "record_strategies-TOTAL_FORMS": ["1"],
            "record_strategies-0-kind": ["task"],
            "record_strategies-0-strategy": ["manual"],
        }
    )
    response = admin.post(wedding_page, data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    assert WeddingStrategy.objects.get(wedding=party.wedding).strategy == "manual"
    # Now a stale task edit is a conflict, not a role contest.
    task = TaskFactory(wedding=party.wedding, assignee=party.flora)
    sync(party.priya, "task", task.pk, 1, status="blocked")
    assert sync(party.ana, "task", task.pk, 1, status="done").outcome == "conflict"

    data = page_form(admin, wedding_page)
    data["record_strategies-0-strategy"] = ["last_write_wins"]
    assert admin.post(wedding_page, data).status_code == 302
    data = page_form(admin, wedding_page)
    data["record_strategies-0-DELETE"] = ["on"]
    assert admin.post(wedding_page, data).status_code == 302
    assert not WeddingStrategy.objects.filter(wedding=party.wedding).exists()
    changes = AuditLog.objects.filter(action="record.strategy.change").order_by("id")
    assert [(entry.details["before"], entry.details["after"], entry.actor_id) for entry in changes] == [
        ("role_hierarchy", "manual", coordinator.pk),
        ("manual", "last_write_wins", coordinator.pk),
        ("last_write_wins", "role_hierarchy", coordinator.pk),
    ]


# --- coordinators' permissions ---------------------------------------------------------------------------

COORDINATORS_RECORDS_PERMISSIONS = {
    "view_conflict",
    "change_conflict",
    *(f"{action}_weddingstrategy" for action in ("view", "add", "change", "delete")),
}


def test_existing_coordinators_are_given_the_inbox_and_the_strategies_by_the_migration(coordinator: User) -> None:
    group = Group.objects.get(name=COORDINATORS_GROUP)
    wanted = COORDINATORS_RECORDS_PERMISSIONS
    assert wanted <= set(group.permissions.values_list("codename", flat=True))
    group.permissions.remove(*AuthPermission.objects.filter(content_type__app_label="records"))
    migration = importlib.import_module("records.migrations.0002_coordinators_resolve_conflicts")
    migration.grant(global_apps, None)
    assert wanted <= set(group.permissions.values_list("codename", flat=True))
    fresh = User.objects.get(pk=coordinator.pk)  # permission caches are per instance
    assert fresh.has_perm("records.change_conflict") and fresh.has_perm("records.add_weddingstrategy")


@pytest.mark.django_db(transaction=True)
def test_the_migration_grants_through_migrate_and_takes_back_when_reversed(coordinator: User) -> None:
    """Through `migrate` on a database that already has coordinators, as an upgrade runs it."""
    group = Group.objects.get(name=COORDINATORS_GROUP)
    wanted = COORDINATORS_RECORDS_PERMISSIONS

    def granted() -> set[str]:
        return set(group.permissions.filter(content_type__app_label="records").values_list("codename", flat=True))

    call_command("migrate", "records", "0001", verbosity=0)
    assert not granted() & wanted
    # As before shared records existed: not even the permissions yet (the migration makes them).
    AuthPermission.objects.filter(content_type__app_label="records").delete()
    call_command("migrate", "records", verbosity=0)
    assert wanted <= granted()
    fresh = User.objects.get(pk=coordinator.pk)
    assert fresh.has_perm("records.change_conflict") and fresh.has_perm("records.delete_weddingstrategy")
