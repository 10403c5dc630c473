"""What each role gets on the wedding-day page, live: a guest's own RSVP, a vendor's status with its
ETA, a task's status, a phone's battery; and the page's accessibility, checked by axe-core."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Page, expect

from tests.factories import MemberFactory, RsvpFactory, TaskFactory
from tests.personas import WeddingParty
from tests.realtime.nodes import ROOT, Cluster
from tests.web.conftest import PageProblems, SignIn, base_url, on_two_nodes, open_wedding
from wedsync.models import Rsvp, Task, TaskStatus
from wedsync.permissions import Role

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.requires_chromium,
    pytest.mark.django_db(transaction=True),
]

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def gils_rsvp(party: WeddingParty) -> Rsvp:
    """Gil's RSVP, pending, and another guest's (Hana's), declined."""
    RsvpFactory(
        guest=MemberFactory(wedding=party.wedding, role=Role.GUEST.value, display_name="Hana"), status="declined"
    )
    return RsvpFactory(guest=party.gil, status="pending")


@pytest.fixture
def shot_list(party: WeddingParty) -> Task:
    return TaskFactory(wedding=party.wedding, title="Deliver the shot list", assignee=party.paula)


async def test_a_guest_answers_their_own_rsvp_and_the_planner_sees_it_live(
    party: WeddingParty, gils_rsvp: Rsvp, web_nodes: Cluster, sign_in: SignIn, problems: PageProblems
) -> None:
    mine = gils_rsvp
    (_, planner), (_, guest) = await on_two_nodes(sign_in, web_nodes, party.priya, party.gil)

    assert "Hana" not in await guest.inner_text("main"), "a guest never sees another guest's answer"
    await expect(planner.locator("#rsvp-body")).to_contain_text("Hana: Declined")
    await guest.select_option("#rsvp-status", "attending")
    await guest.fill("#rsvp-plus", "1")
    await guest.click("#rsvp-body button:has-text('Save my RSVP')")
    await expect(guest.locator("#rsvp-body")).to_contain_text("saved")
    await expect(planner.locator("#rsvp-body")).to_contain_text(f"{party.gil.name}: Attending +1")
    await mine.arefresh_from_db()
    assert (mine.status, mine.plus_ones) == ("attending", 1)
    assert await Rsvp.objects.filter(guest=party.gil).acount() == 1
    assert problems.seen == []


async def test_a_vendors_status_and_battery_reach_the_planner_and_a_task_reaches_its_assignee(
    party: WeddingParty, shot_list: Task, web_nodes: Cluster, sign_in: SignIn, problems: PageProblems
) -> None:
    (_, planner), (_, photographer) = await on_two_nodes(sign_in, web_nodes, party.priya, party.paula)

    await photographer.fill("#status-eta", "15")
    await photographer.click("button[data-activity=en_route]")
    await expect(photographer.locator("#status-current")).to_have_text("Your status: En route")
    await expect(planner.locator("#vendor-statuses")).to_contain_text(f"{party.paula.name}: En route, ETA 15 min")
    # Chromium has the Battery Status API: the level goes out with presence.
    person = planner.locator(f"#presence-body li[data-member='{party.paula.pk}']")
    await expect(person).to_contain_text("battery")
    await expect(person).to_contain_text("En route")
    await expect(planner.locator("#presence-counts")).to_have_text("Online: 1 planner, 1 photographer")

    await planner.select_option(f"#task-list li[data-id='{shot_list.pk}'] select", "in_progress")
    await expect(photographer.locator(f"#task-list li[data-id='{shot_list.pk}'] select")).to_have_value("in_progress")
    await shot_list.arefresh_from_db()
    assert shot_list.status == TaskStatus.IN_PROGRESS
    assert problems.seen == []


async def axe_violations(page: Page) -> list[dict]:
    await page.add_script_tag(content=AXE.read_text())
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("who", ["priya", "gil"])
async def test_the_page_has_no_serious_accessibility_violations(
    who: str, party: WeddingParty, web_nodes: Cluster, sign_in: SignIn
) -> None:
    if not AXE.is_file():
        pytest.fail("node_modules/axe-core is missing: `make test` runs `npm ci` first")
    member = getattr(party, who)
    # Only this profile lets a script in past the CSP: axe is the test's, not the page's.
    _, page = await sign_in(base_url(web_nodes, 0), member, bypass_csp=True)
    await open_wedding(page, member)
    violations = await axe_violations(page)
    assert violations == [], json.dumps([(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in violations])
    await page.goto("/weddings/")
    assert await axe_violations(page) == []
