"""A node killed under the page: behind a real haproxy, the page reconnects to the other node and
shows everything it missed while it was away."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.personas import WeddingParty
from tests.realtime.nodes import Cluster
from tests.servers import haproxy_in_front
from tests.web.conftest import FramesSeen, PageProblems, SignIn, base_url, open_wedding

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.requires_chromium,
    pytest.mark.requires_haproxy,
    pytest.mark.django_db(transaction=True),
]


async def test_the_page_moves_to_the_surviving_node_and_shows_what_it_missed(
    party: WeddingParty,
    web_nodes: Cluster,
    sign_in: SignIn,
    problems: PageProblems,
    frames_seen: dict[Page, FramesSeen],
    tmp_path: Path,
) -> None:
    first, second = web_nodes.nodes
    with haproxy_in_front([first.port, second.port], tmp_path) as port:
        _, planner = await sign_in(f"http://127.0.0.1:{port}", party.priya)
        planner_frames = frames_seen[planner]
        _, couple = await sign_in(base_url(web_nodes, 1), party.ana)
        await open_wedding(planner, party.priya)
        await open_wedding(couple, party.ana)
        await couple.fill("#chat-text", "Before the outage")
        await couple.click("#chat-form button")
        await expect(planner.locator("#feed-list")).to_contain_text("Before the outage")

        first.signal(signal.SIGKILL)  # the planner's node dies without a word
        await expect(planner.locator("#connection")).not_to_have_attribute("data-status", "online", timeout=5000)
        missed = [f"Missed message {n}" for n in range(1, 4)]
        for text in missed:
            await couple.fill("#chat-text", text)
            await couple.click("#chat-form button")
        await expect(couple.locator("#feed-list")).to_contain_text(missed[-1])

        await expect(planner.locator("#connection")).to_have_text("Online", timeout=20000)
        for text in missed:
            await expect(planner.locator("#feed-list")).to_contain_text(text)
        feed = await planner.locator("#feed-list li .text").all_inner_texts()
        assert feed == ["Before the outage", *missed], "everything, once each, in order"
        nodes = [f["node"] for f in planner_frames.frames if f.get("op") == "welcome"]
        assert nodes[0] == first.name and nodes[-1] == second.name, nodes
    # The node's death shows in the page's console as a failed socket, which is what it was.
    assert all("WebSocket" in seen or "ERR_" in seen for seen in problems.seen), problems.seen
