"""The wedding-day page in Chromium, a planner and a guest on two nodes: chat both ways within
PROTOCOL.md's 2 s, no locations ever reach the guest, and an emergency holds the guest's banner
until the guest acknowledges it."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Page, expect

from realtime.models import EventAck
from tests.personas import WeddingParty
from tests.realtime.nodes import Cluster
from tests.web.conftest import FramesSeen, PageProblems, SignIn, on_two_nodes, open_wedding

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.requires_chromium,
    pytest.mark.django_db(transaction=True),
]

WITHIN_PROTOCOL_BOUND = 2000  # ms: PROTOCOL.md's bound for what reaches another member


async def test_planner_and_guest_on_two_nodes_chat_and_the_guest_never_sees_where_anyone_is(
    party: WeddingParty,
    web_nodes: Cluster,
    sign_in: SignIn,
    problems: PageProblems,
    frames_seen: dict[Page, FramesSeen],
) -> None:
    (_, planner), (_, guest) = await on_two_nodes(sign_in, web_nodes, party.priya, party.gil)
    guest_frames = frames_seen[guest]

    await planner.fill("#chat-text", "The cake arrives at six")
    await planner.click("#chat-form button")
    await expect(guest.locator("#feed-list")).to_contain_text("The cake arrives at six", timeout=WITHIN_PROTOCOL_BOUND)
    await guest.fill("#chat-text", "Where do we park?")
    await guest.click("#chat-form button")
    await expect(planner.locator("#feed-list")).to_contain_text("Where do we park?", timeout=WITHIN_PROTOCOL_BOUND)

    # The planner shares a location and sees it; the guest gets counts only, on screen and on the wire.
    await planner.select_option("#my-location", "photo_location")
    await expect(planner.locator("#presence-body")).to_contain_text("Photo location")
    await expect(guest.locator("#presence-counts")).to_contain_text("planner")
    await guest.reload()
    await open_wedding(guest, party.gil)
    await expect(guest.locator("#presence-counts")).to_contain_text("1 planner")
    assert "Photo location" not in await guest.inner_text("main")
    assert "Priya" not in await guest.inner_text("#presence-body")
    assert guest_frames.frames, "the guest's socket was watched"
    assert not [f for f in guest_frames.frames if f.get("op") == "presence_diff"]
    assert not [f for f in guest_frames.frames if "photo_location" in json.dumps(f)]
    assert problems.seen == []


async def test_an_emergency_holds_the_guests_banner_until_the_guest_acknowledges_it(
    party: WeddingParty,
    web_nodes: Cluster,
    sign_in: SignIn,
    problems: PageProblems,
) -> None:
    (_, planner), (_, guest) = await on_two_nodes(sign_in, web_nodes, party.priya, party.gil)
    assert await guest.locator("#emergency-form").count() == 0, "guests may not send emergencies"

    await planner.fill("#emergency-message", "Fire alarm in the reception hall: everyone to the parking")
    await planner.select_option("#emergency-location", "reception_hall")
    await planner.click("#emergency-form button")

    banner = guest.locator("#emergencies .banner")
    await expect(banner).to_contain_text("Fire alarm in the reception hall", timeout=WITHIN_PROTOCOL_BOUND)
    await expect(guest.locator("#emergencies")).to_have_attribute("role", "alert")
    await guest.reload()  # a reload does not make it go away
    await open_wedding(guest, party.gil)
    await expect(banner).to_contain_text("Fire alarm in the reception hall")

    await guest.click("#emergencies .banner button:has-text('Acknowledge')")
    await expect(banner).to_have_count(0)
    alarm_seq = int(await planner.locator("#feed-list .announcement").first.get_attribute("data-seq") or 0)
    expect_ack = EventAck.objects.filter(member=party.gil, event__seq=alarm_seq)
    for _ in range(50):
        if await expect_ack.aexists():
            break
        await guest.wait_for_timeout(100)
    assert await expect_ack.aexists(), "the guest's ack reached the server"
    await guest.reload()
    await open_wedding(guest, party.gil)
    await guest.wait_for_timeout(500)
    await expect(banner).to_have_count(0)
    assert problems.seen == []
