"""The oversight panel goes through the services: bad input is a form error, edits are versioned."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import TimelineItemFactory
from tests.personas import WeddingParty, make_wedding_party
from wedsync.models import AuditLog, Member, TimelineItem

pytestmark = pytest.mark.django_db


def test_adding_a_member_without_a_role_is_a_form_error(admin_client, party: WeddingParty) -> None:
    response = admin_client.post(
        reverse("admin:wedsync_member_add"),
        {"user": party.gil.user_id, "wedding": party.wedding.pk, "role": "", "is_active": "on"},
    )
    assert response.status_code == 200
    assert b"This field is required" in response.content
    assert Member.objects.count() == len(party.members)


def _item_form(item: TimelineItem, vendors: list[Member]) -> dict[str, object]:
    """The change form as the page posts it: each field beside its value when the page was loaded
    (``initial-``), and the version it showed."""
    shown = {
        "title": item.title,
        "starts_at_0": item.starts_at.strftime("%Y-%m-%d"),
        "starts_at_1": item.starts_at.strftime("%H:%M:%S"),
        "location": item.location,
        "notes": item.notes,
        "ceremony_notes": item.ceremony_notes,
    }
    form: dict[str, object] = {**shown, **{f"initial-{name}": value for name, value in shown.items()}}
    form["initial-assigned_vendors"] = list(item.assigned_vendors.values_list("pk", flat=True))
    form.update(
        {"base_version": item.version, "location": "ceremony_area", "assigned_vendors": [v.pk for v in vendors]}
    )
    return form


def test_a_vendor_of_another_wedding_cannot_be_assigned(admin_client, party: WeddingParty) -> None:
    other = make_wedding_party()
    item = TimelineItemFactory(wedding=party.wedding)
    response = admin_client.post(
        reverse("admin:wedsync_timelineitem_change", args=[item.pk]), _item_form(item, [other.paula])
    )
    assert response.status_code == 200
    assert b"is not a member of" in response.content
    assert not item.assigned_vendors.exists()


@pytest.mark.requires_postgres
def test_an_admin_edit_goes_through_the_engine_and_is_audited(admin_client, party: WeddingParty) -> None:
    item = TimelineItemFactory(wedding=party.wedding, title="Ceremony", ceremony_notes="Rings after vows")
    form = _item_form(item, [party.paula])
    form["title"] = "Ceremony (moved to the garden)"
    response = admin_client.post(reverse("admin:wedsync_timelineitem_change", args=[item.pk]), form)
    assert response.status_code == 302, response.content[:3000]
    item.refresh_from_db()
    assert (item.title, item.version, item.ceremony_notes) == ("Ceremony (moved to the garden)", 2, "Rings after vows")
    assert list(item.assigned_vendors.all()) == [party.paula]
    entry = AuditLog.objects.get(action="record.change")
    assert entry.target == f"timeline_item:{item.pk}"
    assert (entry.details["outcome"], entry.details["changed"]) == (
        "applied",
        ["assigned_vendors", "location", "title"],
    )
