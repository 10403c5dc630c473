"""The oversight panel: the wedding page shows live presence and open alerts, and acknowledges them."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from presence.models import Alert, AlertKind
from presence.services import presence_device_join
from tests.factories import AlertFactory, device_presence
from tests.personas import WeddingParty
from wedsync.models import AuditLog, Member, Wedding

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]


@pytest.fixture
def coordinator(client: Client) -> Client:
    user = get_user_model().objects.create_user(
        username="coordinator", password="x" * 20, is_staff=True, is_superuser=True
    )
    client.force_login(user)
    return client


def _change_url(wedding: Wedding) -> str:
    return reverse("admin:wedsync_wedding_change", args=[wedding.pk])


def test_the_wedding_page_shows_who_is_here_and_the_open_alerts(
    coordinator: Client, party: WeddingParty, django_assert_max_num_queries
) -> None:
    presence_device_join(
        device=device_presence(party.paula, location="ceremony_area", activity="working", battery=64, charging=True)
    )
    presence_device_join(device=device_presence(party.gil))
    AlertFactory(wedding=party.wedding, member=party.olu, message="Olu (officiant) is not online.")
    AlertFactory(wedding=party.wedding, member=party.ana, message="Resolved long ago.", resolved_at="2026-01-01T00:00Z")
    response = coordinator.get(_change_url(party.wedding))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Who is here now" in page
    paula_row = page[page.index(f"<td>{party.paula.name}</td>") :].split("</tr>")[0]
    for cell in ("photographer", "online", "ceremony_area", "working", "64 % (charging)", "at the venue from 15:30"):
        assert f"<td>{cell}</td>" in paula_row, (cell, paula_row)
    victor_row = page[page.index(f"<td>{party.victor.name}</td>") :].split("</tr>")[0]
    assert "<td>offline</td>" in victor_row and "<td>online all day</td>" in victor_row
    assert party.gil.name not in page.split("Who is here now")[1].split("</table>")[0]  # guests: a count
    assert "Guests online: 1" in page
    assert "Olu (officiant) is not online." in page
    assert "Resolved long ago." not in page

    # More members online and more alerts cost no more queries.
    with django_assert_max_num_queries(100) as captured:
        coordinator.get(_change_url(party.wedding))
    before = len(captured.captured_queries)
    for member in (party.ana, party.ben, party.olu, party.victor):
        presence_device_join(device=device_presence(member, location="ceremony_area"))
        AlertFactory(wedding=party.wedding, member=member, kind=AlertKind.LOW_BATTERY, device="phone")
    with django_assert_max_num_queries(before):
        coordinator.get(_change_url(party.wedding))


def test_the_add_page_has_no_presence_yet(coordinator: Client) -> None:
    response = coordinator.get(reverse("admin:wedsync_wedding_add"))
    assert response.status_code == 200
    assert "Who is here now" in response.content.decode()


def _wedding_form(wedding: Wedding, *, acknowledge: list[Alert], alerts: list[Alert]) -> dict[str, object]:
    form: dict[str, object] = {
        "name": wedding.name,
        "slug": wedding.slug,
        "date": wedding.date.isoformat(),
        "time_zone": wedding.time_zone,
        "venue_name": wedding.venue_name,
        "venue_address": wedding.venue_address,
        "ceremony_at_0": wedding.ceremony_at.strftime("%Y-%m-%d"),
        "ceremony_at_1": wedding.ceremony_at.strftime("%H:%M:%S"),
        "status": wedding.status,
    }
    members = list(Member.objects.filter(wedding=wedding).order_by("role", "id"))
    form.update(
        {"members-TOTAL_FORMS": len(members), "members-INITIAL_FORMS": len(members), "members-MIN_NUM_FORMS": 0}
    )
    for i, member in enumerate(members):
        form.update(
            {
                f"members-{i}-id": member.pk,
                f"members-{i}-wedding": wedding.pk,
                f"members-{i}-user": member.user_id,
                f"members-{i}-role": member.role,
                f"members-{i}-is_active": "on",
            }
        )
        if member.is_key_person:
            form[f"members-{i}-is_key_person"] = "on"
    form.update(
        {
            "coordinator_assignments-TOTAL_FORMS": 0,
            "coordinator_assignments-INITIAL_FORMS": 0,
            "coordinator_assignments-MIN_NUM_FORMS": 0,
            "record_strategies-TOTAL_FORMS": 0,
            "record_strategies-INITIAL_FORMS": 0,
            "record_strategies-MIN_NUM_FORMS": 0,
        }
    )
    form.update({"alerts-TOTAL_FORMS": len(alerts), "alerts-INITIAL_FORMS": len(alerts), "alerts-MIN_NUM_FORMS": 0})
    for i, alert in enumerate(alerts):
        form.update({f"alerts-{i}-id": alert.pk, f"alerts-{i}-wedding": wedding.pk})
        if alert in acknowledge:
            form[f"alerts-{i}-acknowledge"] = "on"
    return form


def test_acknowledging_on_the_wedding_page_touches_nothing_else_of_the_alert(
    coordinator: Client, party: WeddingParty
) -> None:
    olu = AlertFactory(wedding=party.wedding, member=party.olu)
    paula = AlertFactory(wedding=party.wedding, member=party.paula, severity="critical")
    # The beat task resolves Paula's alert while the page is open: acknowledging it must not reopen it.
    form = _wedding_form(party.wedding, acknowledge=[olu, paula], alerts=[olu, paula])
    Alert.objects.filter(pk=paula.pk).update(resolved_at="2026-06-13T14:50Z")
    response = coordinator.post(_change_url(party.wedding), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    olu.refresh_from_db()
    paula.refresh_from_db()
    assert olu.acknowledged_by is not None and olu.acknowledged_by.username == "coordinator"
    assert paula.acknowledged_at is not None and paula.resolved_at is not None
    assert AuditLog.objects.filter(action="presence.alert.ack").count() == 2


def test_leaving_the_box_unticked_acknowledges_nothing(coordinator: Client, party: WeddingParty) -> None:
    alert = AlertFactory(wedding=party.wedding, member=party.olu)
    response = coordinator.post(
        _change_url(party.wedding), _wedding_form(party.wedding, acknowledge=[], alerts=[alert])
    )
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_the_alert_list_acknowledges_with_an_action(coordinator: Client, party: WeddingParty) -> None:
    alerts = [AlertFactory(wedding=party.wedding, member=m) for m in (party.olu, party.paula)]
    changelist = reverse("admin:presence_alert_changelist")
    page = coordinator.get(changelist, {"state": "unacknowledged"})
    assert page.status_code == 200
    assert page.content.decode().count('name="_selected_action"') == 2
    response = coordinator.post(
        changelist, {"action": "acknowledge", "_selected_action": [alert.pk for alert in alerts]}, follow=True
    )
    assert "Acknowledged 2 alert(s)." in response.content.decode()
    assert Alert.objects.filter(acknowledged_at__isnull=False).count() == 2
    assert coordinator.get(reverse("admin:presence_alert_add")).status_code == 403
