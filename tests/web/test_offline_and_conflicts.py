"""Offline and contested edits in Chromium: what a planner does in a dead zone survives a closed tab
and lands once, in order, for everyone; the loser of a contested timeline edit is told, with both
sides."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from realtime.models import Event
from tests.factories import TimelineItemFactory
from tests.personas import WeddingParty
from tests.realtime.nodes import Cluster
from tests.web.conftest import PageProblems, SignIn, edit_title, on_two_nodes, open_wedding
from wedsync.models import TimelineItem

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.requires_chromium,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def ceremony(party: WeddingParty) -> TimelineItem:
    return TimelineItemFactory(wedding=party.wedding, title="Ceremony")


async def test_edits_made_offline_survive_a_closed_tab_and_land_once_in_order(
    party: WeddingParty, ceremony: TimelineItem, web_nodes: Cluster, sign_in: SignIn, problems: PageProblems
) -> None:
    (planner_context, planner), (_, couple) = await on_two_nodes(sign_in, web_nodes, party.priya, party.ana)

    await planner_context.set_offline(True)
    await expect(planner.locator("#connection")).to_have_attribute("data-status", "offline")
    await edit_title(planner, ceremony.pk, "Ceremony (in the garden)")
    await planner.fill("#chat-text", "We moved the ceremony to the garden")
    await planner.click("#chat-form button")
    await expect(planner.locator("#connection")).to_contain_text("2 waiting to send")
    await expect(planner.locator("#feed-list .pending")).to_contain_text("waiting to send")
    await planner.close()  # the tab goes, with the ops only in IndexedDB

    await planner_context.set_offline(False)
    reopened = problems.watch(await planner_context.new_page())
    await open_wedding(reopened, party.priya)
    await expect(reopened.locator("#connection")).to_have_text("Online")

    await expect(couple.locator("#timeline-list")).to_contain_text("Ceremony (in the garden)")
    await expect(couple.locator("#feed-list")).to_contain_text("We moved the ceremony to the garden")
    await expect(reopened.locator("#feed-list")).to_contain_text("We moved the ceremony to the garden")
    await expect(reopened.locator("#feed-list .pending")).to_have_count(0)
    assert await couple.locator("#feed-list li:has-text('We moved the ceremony')").count() == 1

    chats = [e async for e in Event.objects.filter(wedding=party.wedding, type="chat.message")]
    edits = [e async for e in Event.objects.filter(wedding=party.wedding, type="record.updated")]
    assert [c.data["text"] for c in chats] == ["We moved the ceremony to the garden"]
    assert len({e.data["op_id"] for e in edits}) == 1, "one edit, stored once (split per audience part)"
    assert max(e.seq for e in edits) < chats[0].seq, "in the order they were made"
    await ceremony.arefresh_from_db()
    assert (ceremony.title, ceremony.version) == ("Ceremony (in the garden)", 2)
    assert problems.seen == []


async def test_the_loser_of_a_contested_timeline_edit_gets_the_prompt_with_both_sides(
    party: WeddingParty, ceremony: TimelineItem, web_nodes: Cluster, sign_in: SignIn, problems: PageProblems
) -> None:
    (photographer_context, photographer), (_, planner) = await on_two_nodes(
        sign_in, web_nodes, party.paula, party.priya
    )

    # Both start from version 1; the photographer's edit waits offline while the planner's lands.
    await photographer_context.set_offline(True)
    await expect(photographer.locator("#connection")).to_have_attribute("data-status", "offline")
    await edit_title(photographer, ceremony.pk, "Ceremony (photos first)")
    await edit_title(planner, ceremony.pk, "Ceremony (vows first)")
    await expect(planner.locator("#timeline-list")).to_contain_text("saved")

    await photographer_context.set_offline(False)
    dialog = photographer.locator("#conflict-dialog")
    await expect(dialog).to_be_visible(timeout=15000)
    await expect(dialog).to_contain_text("Your change lost")
    await expect(dialog.locator("#conflict-rows")).to_contain_text("Ceremony (photos first)")
    await expect(dialog.locator("#conflict-rows")).to_contain_text("Ceremony (vows first)")
    await expect(photographer.locator("#timeline-list")).to_contain_text("Ceremony (vows first)")
    await photographer.click("#conflict-close")
    await expect(dialog).to_be_hidden()
    await expect(planner.locator("#conflict-dialog")).to_be_hidden()
    assert problems.seen == []
