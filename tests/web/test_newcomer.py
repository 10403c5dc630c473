"""What a newcomer does first: `make run` with no environment (bin/run, the embedded profile:
SQLite, the in-memory layer, DEBUG and the demo seed), sign in as a demo member and coordinate the
demo wedding from a phone-sized window."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.realtime.nodes import ROOT
from tests.servers import free_port, wait_until_healthy
from tests.web.conftest import PHONE, PageProblems
from wedsync.services.demo import DEMO_PASSWORD

pytestmark = [pytest.mark.requires_chromium]


@pytest.fixture
def embedded_run(tmp_path: Path) -> Iterator[str]:
    """bin/run as `make run` starts it, with its files in a directory of the test's own."""
    port = free_port()
    log_path = tmp_path / "run.log"
    stray = ROOT / "control"  # where kombu's filesystem broker writes unless told otherwise
    stray_before = stray.exists()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port),
        "WEDSYNC_VAR_DIR": str(tmp_path / "var"),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ROOT / "bin" / "run")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_healthy(port, process, within=90, log=lambda: log_path.read_text(errors="replace"))
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # honcho and what it started, all of them ours
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    run_log = log_path.read_text(errors="replace")
    first_traceback = run_log.find("Traceback")
    assert first_traceback == -1, run_log[max(0, first_traceback - 2000) : first_traceback + 6000]
    assert stray_before or not stray.exists(), "make run wrote into the checkout, not WEDSYNC_VAR_DIR"


async def test_a_newcomer_runs_it_signs_in_as_a_demo_planner_and_coordinates_the_day(
    embedded_run: str, browser: Browser, problems: PageProblems
) -> None:
    context = await browser.new_context(viewport=PHONE, base_url=embedded_run)
    page = problems.watch(await context.new_page())
    await page.goto("/")
    await page.click("text=My weddings")
    await page.fill("#id_username", "demo1-planner")
    await page.fill("#id_password", DEMO_PASSWORD)
    await page.click("button:has-text('Sign in')")
    await page.click(".weddings a >> nth=0")
    await expect(page.locator("#connection")).to_have_text("Online", timeout=15000)

    await expect(page.locator("#timeline-list li")).to_have_count(5)
    await page.fill("#chat-text", "Welcome, everyone!")
    await page.click("#chat-form button")
    await expect(page.locator("#feed-list")).to_contain_text("Welcome, everyone!")
    await expect(page.locator("#feed-list .pending")).to_have_count(0)
    first_item = page.locator("#timeline-list li").first
    await first_item.locator("button:has-text('Edit')").click()
    await first_item.locator("input[name=title]").fill("Florist setup (arches first)")
    await first_item.locator("button:has-text('Save')").click()
    await expect(page.locator("#timeline-list")).to_contain_text("Florist setup (arches first)")
    await expect(page.locator("#timeline-list")).to_contain_text("saved")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "nothing runs off a phone's screen sideways"
    await context.close()
    assert problems.seen == []
