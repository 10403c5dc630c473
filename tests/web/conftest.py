"""The pages in a real browser: Debian's Chromium driven by Playwright, against daphne nodes that
serve the pages, the API and the sockets the production way (DEBUG off, collected static files)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.utils.crypto import get_random_string
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    ViewportSize,
    WebSocket,
    async_playwright,
)

from tests.conftest import chromium_executable
from tests.factories import PASSWORD
from tests.realtime.nodes import ROOT, Cluster, cluster, node_environment
from wedsync.models import Member

PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    # The async API: the sync one runs an event loop in the test's thread, where Django's ORM
    # (rightly) refuses to run.
    path = chromium_executable()
    assert path is not None, "the requires_chromium marker skips (or fails) tests without Chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Static files collected once, as `make run` does, for the nodes' manifest storage."""
    var_dir = tmp_path_factory.mktemp("web-var")
    env = {**node_environment(redis_url="redis://127.0.0.1:6379/15"), "WEDSYNC_VAR_DIR": str(var_dir)}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    return var_dir


@pytest.fixture
def web_nodes(tmp_path: Path, static_root: Path) -> Iterator[Cluster]:
    """Two nodes on one Redis, serving pages too; http origins are trusted, as behind a dev proxy."""
    extra = {"WEDSYNC_VAR_DIR": str(static_root), "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1"}
    with cluster(tmp_path, extra_env=extra) as nodes:
        yield nodes


def base_url(nodes: Cluster, index: int) -> str:
    return f"http://127.0.0.1:{nodes.nodes[index].port}"


class FramesSeen:
    """Every socket frame a page received, parsed."""

    def __init__(self, page: Page) -> None:
        self.frames: list[dict] = []
        page.on("websocket", self._socket)

    def _socket(self, socket: WebSocket) -> None:
        socket.on("framereceived", lambda payload: self.frames.append(json.loads(payload)))


class PageProblems:
    """What a page logged as an error or threw; a test asserts there was none."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Page) -> Page:
        def thrown(error: Error) -> None:
            self.seen.append(f"{page.url}: {error}")

        def logged(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.seen.append(f"{page.url}: console: {message.text}")

        page.on("pageerror", thrown)
        page.on("console", logged)
        return page


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


def password_for_nodes() -> str:
    """The test password hashed as the nodes' production settings can check it (the test settings
    hash with MD5 for speed, which production does not accept); few iterations, for speed too."""
    return PBKDF2PasswordHasher().encode(PASSWORD, get_random_string(12), iterations=1000)


SignIn = Callable[..., Awaitable[tuple[BrowserContext, Page]]]


@pytest.fixture
def frames_seen() -> dict[Page, FramesSeen]:
    """The socket frames each page opened by ``sign_in`` received, from its first socket on."""
    return {}


@pytest.fixture
async def sign_in(
    browser: Browser, problems: PageProblems, frames_seen: dict[Page, FramesSeen]
) -> AsyncIterator[SignIn]:
    """``await sign_in(base, member, viewport=PHONE)``: a fresh browser profile signed in through the login form."""
    contexts: list[BrowserContext] = []

    async def open_as(
        base: str, member: Member, viewport: ViewportSize = PHONE, *, bypass_csp: bool = False
    ) -> tuple[BrowserContext, Page]:
        await User.objects.filter(pk=member.user_id).aupdate(password=password_for_nodes())
        context = await browser.new_context(viewport=viewport, base_url=base, bypass_csp=bypass_csp)
        contexts.append(context)
        page = problems.watch(await context.new_page())
        frames_seen[page] = FramesSeen(page)
        await page.goto("/login/")
        await page.fill("#id_username", member.user.username)
        await page.fill("#id_password", PASSWORD)
        await page.click("button:has-text('Sign in')")
        await page.wait_for_url("**/weddings/")
        return context, page

    yield open_as
    for context in contexts:
        await context.close()


async def open_wedding(page: Page, member: Member) -> Page:
    await page.goto(f"/weddings/{member.wedding_id}/")
    await page.wait_for_selector("#connection[data-status=online]", timeout=15000)
    return page


async def on_two_nodes(
    sign_in: SignIn, nodes: Cluster, first: Member, second: Member
) -> tuple[tuple[BrowserContext, Page], tuple[BrowserContext, Page]]:
    """``first`` signed in on the first node and ``second`` on the other, each on the wedding's page."""
    one = await sign_in(base_url(nodes, 0), first)
    two = await sign_in(base_url(nodes, 1), second)
    await open_wedding(one[1], first)
    await open_wedding(two[1], second)
    return one, two


async def edit_title(page: Page, item_id: int, title: str) -> None:
    """Changes a timeline item's title through its Edit form."""
    row = f"#timeline-list li[data-id='{item_id}']"
    await page.click(f"{row} button:has-text('Edit')")
    await page.fill(f"#edit-title-{item_id}", title)
    await page.click(f"{row} form button:has-text('Save')")
