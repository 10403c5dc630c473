"""The coordinators' board in the admin (issue 19, decision 0029): today's weddings in their own
time zones, scoped to the coordinator, each card with who is here or missing, open alerts and
emergencies (acknowledged and resolved in place), vendor statuses and what comes next."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from presence.models import Alert, Emergency
from presence.services import presence_device_join
from realtime.services.events import member_event_publish
from tests.factories import AlertFactory, TimelineItemFactory, UserFactory, device_presence
from tests.personas import WeddingParty, make_wedding_party
from wedsync.models import Agency, AuditLog, Wedding
from wedsync.services.agencies import agency_coordinator_add

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres, pytest.mark.requires_redis]

LISBON = zoneinfo.ZoneInfo("Europe/Lisbon")
NOON_UTC = dt.datetime(2026, 6, 13, 12, 0, tzinfo=dt.UTC)  # 13:00 in Lisbon


def coordinator_of(*weddings: Wedding) -> User:
    agency = Agency.objects.create(name=f"Agency of {weddings[0].name}")
    Wedding.objects.filter(pk__in=[w.pk for w in weddings]).update(agency=agency)
    user: User = UserFactory(username=f"cora-{weddings[0].pk}")
    agency_coordinator_add(agency=agency, user=user)
    return user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def card_url(wedding: Wedding) -> str:
    return reverse("board-card", kwargs={"wedding_id": wedding.pk})


@pytest.fixture
def today_party() -> WeddingParty:
    """A Lisbon wedding whose ceremony is at 13:25 local, 25 minutes after NOON_UTC."""
    return make_wedding_party(
        date=dt.date(2026, 6, 13), time_zone="Europe/Lisbon", ceremony_at=NOON_UTC + dt.timedelta(minutes=25)
    )


def test_the_admin_index_links_the_board(today_party: WeddingParty) -> None:
    page = signed_in(coordinator_of(today_party.wedding)).get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("board")}"' in page


def test_people_who_are_not_staff_are_sent_to_the_admin_login(today_party: WeddingParty) -> None:
    response = signed_in(today_party.priya.user).get(reverse("board"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    response = signed_in(today_party.priya.user).get(card_url(today_party.wedding))
    assert response.status_code == 302


@time_machine.travel(NOON_UTC, tick=False)
def test_the_board_shows_the_weddings_of_today_in_each_ones_time_zone_and_only_those_overseen() -> None:
    def wedding(name: str, zone: str, day: dt.date) -> Wedding:
        local = dt.datetime.combine(day, dt.time(18, 0), tzinfo=zoneinfo.ZoneInfo(zone))
        return make_wedding_party(name=name, time_zone=zone, date=day, ceremony_at=local).wedding

    kiritimati = wedding("Kiritimati", "Pacific/Kiritimati", dt.date(2026, 6, 14))  # 02:00 there: today
    pago = wedding("Pago Pago", "Pacific/Pago_Pago", dt.date(2026, 6, 13))  # 01:00 there: today
    lisbon_tomorrow = wedding("Lisbon tomorrow", "Europe/Lisbon", dt.date(2026, 6, 14))
    kiritimati_yesterday = wedding("Kiritimati yesterday", "Pacific/Kiritimati", dt.date(2026, 6, 13))
    someone_elses = wedding("Someone else's", "Europe/Lisbon", dt.date(2026, 6, 13))
    cora = coordinator_of(kiritimati, pago, lisbon_tomorrow, kiritimati_yesterday)
    coordinator_of(someone_elses)
    response = signed_in(cora).get(reverse("board"))
    assert response.status_code == 200
    page = response.content.decode()
    shown = [w.name for w in (kiritimati, pago, lisbon_tomorrow, kiritimati_yesterday, someone_elses) if w.name in page]
    assert shown == ["Kiritimati", "Pago Pago"]
    assert response.context["boot"]["weddings"] == [kiritimati.pk, pago.pk]  # earliest ceremony first
    assert response.context["boot"]["endpoints"]["socket"] == "/ws/v1/?observe=1"


@time_machine.travel(NOON_UTC, tick=False)
def test_a_card_shows_whos_here_and_missing_alerts_emergencies_vendors_and_whats_next(
    today_party: WeddingParty, django_assert_max_num_queries: Any
) -> None:
    party = today_party
    for member in (party.ana, party.ben, party.victor):
        presence_device_join(device=device_presence(member, location="ceremony_area"))
    presence_device_join(device=device_presence(party.priya, location="off_site", battery=9, charging=False))
    presence_device_join(device=device_presence(party.gil))
    AlertFactory(wedding=party.wedding, member=party.paula, message="Paula (photographer) is not at the venue.")
    published = member_event_publish(member=party.priya, type_name="emergency.alert", data={"message": "Fire"})
    member_event_publish(
        member=party.carmen, type_name="vendor.status", data={"activity": "en_route", "eta_minutes": 12}
    )
    member_event_publish(member=party.carmen, type_name="vendor.status", data={"activity": "at_venue"})
    member_event_publish(member=party.flora, type_name="vendor.status", data={"activity": "en_route", "eta_minutes": 5})
    TimelineItemFactory(wedding=party.wedding, title="Arches up", starts_at=NOON_UTC - dt.timedelta(minutes=10))
    TimelineItemFactory(wedding=party.wedding, title="Old news", starts_at=NOON_UTC - dt.timedelta(hours=2))
    TimelineItemFactory(wedding=party.wedding, title="Ceremony", starts_at=NOON_UTC + dt.timedelta(minutes=25))
    cora = coordinator_of(party.wedding)

    client = signed_in(cora)
    with django_assert_max_num_queries(14):  # the session, the user and its permissions included: no N+1
        body: dict[str, Any] = client.get(card_url(party.wedding), HTTP_ACCEPT="application/json").json()
    html = body["html"]
    assert body["seq"] == 4 and body["epoch"]  # the stream's head when the card was read
    assert "4 of 10 members online" in html and "1 guest online" in html
    people = {person: html.split(f'data-member="{person.pk}"')[1].split("</li>")[0] for person in party.members[:4]}
    assert ">here<" in people[party.ana] and ">here<" in people[party.ben]
    assert ">missing<" in people[party.priya] and "battery 9 %" in people[party.priya]  # off site
    assert ">missing<" in html.split(f'data-member="{party.paula.pk}"')[1].split("</li>")[0]
    assert "3 missing" in html  # the planner (off site), the photographer and the officiant (offline)
    missing_first = [html.index(f'data-member="{m.pk}"') for m in (party.olu, party.paula, party.priya, party.ana)]
    assert missing_first == sorted(missing_first)
    assert "Paula (photographer) is not at the venue." in html and ">Acknowledge<" in html
    emergency = Emergency.objects.get(raised_event_id=published.id)
    assert (
        "<strong>Fire</strong>" in html
        and reverse("board-emergency-resolve", args=[party.wedding.pk, emergency.pk]) in html
    )
    assert "<strong>At venue</strong>" in html and "ETA 12" not in html  # carmen's latest status only
    assert "<strong>En route</strong>, ETA 5 min" in html
    assert html.index("Arches up") < html.index("Ceremony") and "Old news" not in html
    assert '<span class="badge">now</span> 12:50 Arches up' in html  # local time, under way


def test_a_card_of_a_wedding_not_overseen_is_not_found_alike(today_party: WeddingParty) -> None:
    cora = coordinator_of(make_wedding_party().wedding)
    client = signed_in(cora)
    answers = [client.get(reverse("board-card", kwargs={"wedding_id": pk})) for pk in (today_party.wedding.pk, 98765)]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].json() == answers[1].json()
    answers = [
        client.get(reverse("board-presence", kwargs={"wedding_id": pk})) for pk in (today_party.wedding.pk, 98765)
    ]
    assert [a.status_code for a in answers] == [404, 404] and answers[0].json() == answers[1].json()


def test_acknowledging_in_place_answers_with_the_card_and_is_audited(today_party: WeddingParty) -> None:
    alert = AlertFactory(wedding=today_party.wedding, member=today_party.olu, message="Olu is not online.")
    cora = coordinator_of(today_party.wedding)
    url = reverse("board-alert-acknowledge", args=[today_party.wedding.pk, alert.pk])
    response = signed_in(cora).post(url, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert (
        f"Acknowledged by {cora.get_full_name()}" in response.json()["html"]
        and ">Acknowledge<" not in response.json()["html"]
    )
    alert.refresh_from_db()
    assert alert.acknowledged_by_id == cora.pk
    assert AuditLog.objects.filter(action="presence.alert.ack", actor=cora, wedding=today_party.wedding).exists()


def test_without_script_acknowledging_goes_back_to_the_board_with_a_message(today_party: WeddingParty) -> None:
    alert = AlertFactory(wedding=today_party.wedding, member=today_party.olu)
    client = signed_in(coordinator_of(today_party.wedding))
    response = client.post(reverse("board-alert-acknowledge", args=[today_party.wedding.pk, alert.pk]), follow=True)
    assert response.redirect_chain == [(reverse("board"), 302)]
    assert "Alert acknowledged." in response.content.decode()


def test_an_alert_of_a_wedding_not_overseen_is_refused_in_words_and_audited(today_party: WeddingParty) -> None:
    alert = AlertFactory(wedding=today_party.wedding, member=today_party.olu)
    stranger = coordinator_of(make_wedding_party().wedding)
    url = reverse("board-alert-acknowledge", args=[today_party.wedding.pk, alert.pk])
    response = signed_in(stranger).post(url, HTTP_ACCEPT="application/json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None
    assert AuditLog.objects.filter(action="presence.alert.refuse", actor=stranger, outcome="refused").exists()


def test_resolving_an_emergency_in_place_tells_everyone(today_party: WeddingParty) -> None:
    published = member_event_publish(member=today_party.priya, type_name="emergency.alert", data={"message": "Fire"})
    emergency = Emergency.objects.get(raised_event_id=published.id)
    cora = coordinator_of(today_party.wedding)
    url = reverse("board-emergency-resolve", args=[today_party.wedding.pk, emergency.pk])
    response = signed_in(cora).post(url, HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and "<strong>Fire</strong>" not in response.json()["html"]
    emergency.refresh_from_db()
    assert emergency.resolved_by_id == cora.pk
    assert today_party.wedding.events.filter(type="emergency.resolved").count() == 1


def test_the_wedding_admin_page_keeps_its_presence_live(today_party: WeddingParty) -> None:
    cora = coordinator_of(today_party.wedding)
    client = signed_in(cora)
    page = client.get(reverse("admin:wedsync_wedding_change", args=[today_party.wedding.pk])).content.decode()
    assert f'id="live-presence" data-wedding="{today_party.wedding.pk}"' in page
    assert 'type="module"' in page and "wedsync/admin_presence" in page
    presence_device_join(device=device_presence(today_party.paula, location="ceremony_area"))
    fragment = client.get(reverse("board-presence", kwargs={"wedding_id": today_party.wedding.pk})).json()
    row = fragment["html"][fragment["html"].index(f"<td>{today_party.paula.name}</td>") :].split("</tr>")[0]
    assert "<td>online</td>" in row and "<td>ceremony_area</td>" in row
