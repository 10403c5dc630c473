"""The coordinators' board live in Chromium (issue 19): two nodes, a Celery worker with beat, a
ceremony 25 minutes away. The board updates without a reload when beat raises an alert and when a
phone drops off, and an alert is acknowledged in place."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.async_api import Browser, Page, expect

from realtime.client import RealtimeClient
from tests.factories import PASSWORD, UserFactory
from tests.personas import WeddingParty, make_wedding_party
from tests.realtime.conftest import bearer
from tests.realtime.nodes import cluster
from tests.servers import celery_worker_with_beat
from tests.web.conftest import DESKTOP, PageProblems, password_for_nodes
from tests.web.test_page_roles import axe_violations
from wedsync.models import Agency
from wedsync.services.agencies import agency_coordinator_add

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.requires_chromium,
    pytest.mark.django_db(transaction=True),
]


def _zone_where_today_lasts(*, hours: int) -> zoneinfo.ZoneInfo:
    """The board shows weddings whose date is today in their own zone, so a run near a zone's
    midnight would see the ceremony fall on tomorrow: pick a zone where the day outlasts the test."""
    now = timezone.now()
    for name in ("Europe/Lisbon", "Asia/Tokyo", "America/Los_Angeles"):
        zone = zoneinfo.ZoneInfo(name)
        if now.astimezone(zone).date() == (now + dt.timedelta(hours=hours)).astimezone(zone).date():
            return zone
    raise AssertionError("three zones eight hours apart cannot all be within the hours of midnight")


def _day_with_a_coordinator() -> tuple[WeddingParty, User]:
    zone = _zone_where_today_lasts(hours=2)
    ceremony = (timezone.now() + dt.timedelta(minutes=25)).astimezone(zone)
    party = make_wedding_party(date=ceremony.date(), ceremony_at=ceremony, time_zone=str(zone))
    agency = Agency.objects.create(name="Luz Weddings")
    party.wedding.agency = agency
    party.wedding.save(update_fields=["agency"])
    cora: User = UserFactory(username="cora", password=password_for_nodes())
    User.objects.filter(pk=cora.pk).update(password=password_for_nodes())  # the nodes' hasher, not the tests'
    agency_coordinator_add(agency=agency, user=cora)
    return party, cora


async def _signed_in_board(page: Page) -> Page:
    await page.goto("/admin/login/?next=/admin/board/")
    await page.fill("#id_username", "cora")
    await page.fill("#id_password", PASSWORD)
    await page.click("input[type=submit]")
    await page.wait_for_url("**/admin/board/")
    await expect(page.locator("#board-status")).to_have_attribute("data-status", "online", timeout=15000)
    return page


async def test_the_board_shows_beats_alert_and_a_phone_dropping_off_without_a_reload(
    tmp_path: Path, static_root: Path, browser: Browser, problems: PageProblems
) -> None:
    party, cora = await database_sync_to_async(_day_with_a_coordinator)()
    topic, card = f"wedding:{party.wedding.pk}", f"#wedding-{party.wedding.pk}"
    extra = {
        "WEDSYNC_VAR_DIR": str(static_root),
        "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1",
        "PRESENCE_SWEEP_SECONDS": "1",
        "PRESENCE_ALERT_CHECK_SECONDS": "5",
    }
    with cluster(tmp_path, extra_env=extra) as nodes:
        first, second = nodes.nodes
        # Everyone the day depends on is connected, to the second node, but the photographer.
        phones: dict[int, RealtimeClient] = {}
        for member in (party.ana, party.ben, party.priya, party.victor, party.olu):
            phones[member.pk] = RealtimeClient(second.url, token=await bearer(member))
            await phones[member.pk].start()
            await phones[member.pk].subscribe(topic)
        context = await browser.new_context(viewport=DESKTOP, base_url=f"http://127.0.0.1:{first.port}")
        contexts = [context]
        try:
            page = await _signed_in_board(problems.watch(await context.new_page()))
            olu = page.locator(f"{card} li.person[data-member='{party.olu.pk}']")
            await expect(olu).to_have_class("person here")
            await expect(page.locator(f"{card} li.person[data-member='{party.paula.pk}']")).to_have_class(
                "person missing"
            )
            await expect(page.locator(f"{card} .board-alerts")).to_contain_text("No open alerts.")

            # The wedding's admin page keeps its presence table live the same way.
            wedding_page = problems.watch(await context.new_page())
            await wedding_page.goto(f"/admin/wedsync/wedding/{party.wedding.pk}/change/")
            live = wedding_page.locator("#live-presence .live-presence-status")
            await expect(live).to_have_attribute("data-status", "online", timeout=15000)
            olu_row = wedding_page.locator("#live-presence tr", has_text=party.olu.name)
            await expect(olu_row.locator("td").nth(2)).to_have_text("online")

            with celery_worker_with_beat(nodes.environment, tmp_path):
                paula_alert = page.locator(f"{card} li.alert", has_text=party.paula.name)
                await expect(paula_alert).to_contain_text("Key person missing", timeout=30000)
                phones[party.olu.pk].reconnect = False
                await phones[party.olu.pk].close()  # the officiant's phone drops off
                await expect(olu).to_have_class("person missing", timeout=10000)
                await expect(olu_row.locator("td").nth(2)).to_have_text("offline", timeout=10000)
                await paula_alert.get_by_role("button", name="Acknowledge").click()
                await expect(paula_alert).to_contain_text(f"Acknowledged by {cora.get_full_name()}")

            # The board's socket observes: the coordinator is nobody's presence in the wedding.
            await phones[party.priya.pk].request("heartbeat")
            present = {int(member) for member in phones[party.priya.pk].presence[topic]}
            assert present == {party.ana.pk, party.ben.pk, party.priya.pk, party.victor.pk}
            assert problems.seen == []

            # Accessibility, checked by axe-core (its script is injected, so this context skips the CSP).
            checked = await browser.new_context(
                viewport=DESKTOP, base_url=f"http://127.0.0.1:{first.port}", bypass_csp=True
            )
            contexts.append(checked)
            board = await _signed_in_board(await checked.new_page())
            await expect(board.locator(f"{card} .board-alerts")).to_contain_text("Acknowledged by")
            violations = await axe_violations(board)
            assert violations == [], [(v["id"], [n["target"] for n in v["nodes"]]) for v in violations]
        finally:
            for opened in contexts:
                await opened.close()
            for phone in phones.values():
                phone.reconnect = False
                await phone.close()
