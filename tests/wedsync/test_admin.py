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
    return {
        "wedding": item.wedding_id,
        "title": "Ceremony",
        "starts_at_0": item.starts_at.strftime("%Y-%m-%d"),
        "starts_at_1": item.starts_at.strftime("%H:%M:%S"),
        "location": "ceremony_area",
        "assigned_vendors": [vendor.pk for vendor in vendors],
        "notes": "",
    }


def test_a_vendor_of_another_wedding_cannot_be_assigned(admin_client, party: WeddingParty) -> None:
    other = make_wedding_party()
    item = TimelineItemFactory(wedding=party.wedding)
    response = admin_client.post(
        reverse("admin:wedsync_timelineitem_change", args=[item.pk]), _item_form(item, [other.paula])
    )
    assert response.status_code == 200
    assert b"is not a member of" in response.content
    assert not item.assigned_vendors.exists()


def test_an_admin_edit_bumps_the_version_and_is_audited(admin_client, party: WeddingParty) -> None:
    item = TimelineItemFactory(wedding=party.wedding, title="Ceremony")
    form = _item_form(item, [party.paula])
    form["title"] = "Ceremony (moved to the garden)"
    response = admin_client.post(reverse("admin:wedsync_timelineitem_change", args=[item.pk]), form)
    assert response.status_code == 302, response.content[:3000]
    item.refresh_from_db()
    assert (item.title, item.version) == ("Ceremony (moved to the garden)", 2)
    assert list(item.assigned_vendors.all()) == [party.paula]
    entry = AuditLog.objects.get(action="record.change")
    assert entry.target == f"timelineitem:{item.pk}" and "title" in entry.details["changed"]
