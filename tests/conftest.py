"""Shared test set-up: real services, loud reporting of what could not run, personas.

Tests that need Redis or PostgreSQL carry ``requires_redis`` / ``requires_postgres`` (whole
modules set ``pytestmark``), the Autobahn conformance run ``requires_python27``. When a service
does not answer, those tests are skipped and the run ends with a banner naming them; with
``WEDSYNC_REQUIRE_SERVICES=1`` the run stops at once with a failure instead. A test that finds out
only while running that something it needs is missing (the suite would not install) gives up
through the ``not_run`` fixture, to the same effect.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest
from django.conf import settings

from tests.conformance.autobahn import PYTHON27_LOOKED_FOR, python27
from tests.personas import WeddingParty, make_wedding_party

_SERVICE_MARKERS = {
    "requires_redis": "redis",
    "requires_postgres": "postgres",
    "requires_python27": "python2.7",
    "requires_chromium": "chromium",
    "requires_haproxy": "haproxy",
    "requires_nginx": "nginx",
    "requires_redis_sentinel": "redis-sentinel",
    "requires_promtool": "promtool",
}
CHROMIUM_LOOKED_FOR = "$WEDSYNC_CHROMIUM, else chromium on PATH (apt-get install chromium)"


def chromium_executable() -> str | None:
    """Debian's Chromium, which Playwright drives through executable_path (no browser downloads here)."""
    return os.environ.get("WEDSYNC_CHROMIUM") or shutil.which("chromium")


_not_run: dict[str, list[str]] = {}
_services: dict[str, bool] = {}


def _service_places() -> dict[str, str]:
    return {
        **settings.WEDSYNC_TEST_SERVICE_URLS,
        "python2.7": PYTHON27_LOOKED_FOR,
        "chromium": CHROMIUM_LOOKED_FOR,
        "haproxy": "haproxy on PATH (apt-get install haproxy)",
        "nginx": "nginx on PATH (apt-get install nginx)",
        "redis-sentinel": "redis-sentinel on PATH (apt-get install redis-sentinel)",
        "promtool": "promtool on PATH (apt-get install prometheus)",
    }


def _missing_services() -> list[str]:
    return [name for name, up in _services.items() if not up]


def _services_required() -> bool:
    return os.environ.get("WEDSYNC_REQUIRE_SERVICES") == "1"


def pytest_configure(config: pytest.Config) -> None:
    _services.update(settings.WEDSYNC_TEST_SERVICES)
    _services["python2.7"] = python27() is not None  # the Autobahn testsuite runs on nothing newer
    _services["chromium"] = chromium_executable() is not None
    _services["haproxy"] = shutil.which("haproxy") is not None  # a load balancer in front of nodes
    _services["nginx"] = shutil.which("nginx") is not None  # the other one deploy/ ships a config for
    _services["redis-sentinel"] = shutil.which("redis-sentinel") is not None  # Redis failover (decision 0044)
    _services["promtool"] = shutil.which("promtool") is not None  # checks deploy/'s alert rules
    missing = _missing_services()
    if missing and _services_required():
        places = ", ".join(f"{name} at {_service_places()[name]}" for name in missing)
        pytest.exit(f"WEDSYNC_REQUIRE_SERVICES=1 but these services do not answer: {places}", returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = set(_missing_services())
    for item in items:
        for marker, service in _SERVICE_MARKERS.items():
            if item.get_closest_marker(marker) and service in missing:
                place = _service_places()[service]
                item.add_marker(pytest.mark.skip(reason=f"NOT RUN: needs {service}, which does not answer at {place}"))
                _not_run.setdefault(service, []).append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for service, nodeids in _not_run.items():
        terminalreporter.section(f"NOT RUN: {len(nodeids)} tests need {service}", sep="!", red=True, bold=True)
        for nodeid in nodeids:
            terminalreporter.write_line(f"  {nodeid}")
        terminalreporter.write_line(
            f"Install or start {service} (see README) or set WEDSYNC_REQUIRE_SERVICES=1 to make this a failure."
        )


@pytest.fixture
def not_run(request: pytest.FixtureRequest) -> Callable[[str, str], NoReturn]:
    """``not_run(service, why)``: skip this test as NOT RUN (listed in the closing banner), or fail
    it under ``WEDSYNC_REQUIRE_SERVICES=1``."""

    def give_up(service: str, why: str) -> NoReturn:
        if _services_required():
            pytest.fail(f"WEDSYNC_REQUIRE_SERVICES=1 but {service} is not available: {why}")
        _not_run.setdefault(service, []).append(request.node.nodeid)
        pytest.skip(f"NOT RUN: needs {service}: {why}")

    return give_up


@pytest.fixture(autouse=True)
def _isolated_cache() -> Iterator[None]:
    """Throttle counters and other cached state never leak from one test into the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def _redis_forget(*patterns: str) -> None:
    from django.conf import settings

    if not (settings.REDIS_URL and settings.WEDSYNC_TEST_SERVICES.get("redis")):
        return
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _fresh_presence() -> None:
    """Presence lives in Redis under wedding and member ids that the test database hands out again
    on the next run: every test starts from none of it."""
    _redis_forget("wedsync:presence:*", "wedsync:node-alive:*", "wedsync:connects:*")


@pytest.fixture(autouse=True)
def _fresh_address_counts() -> None:
    """Refusal windows, address caps and rate budgets are keyed by 127.0.0.1 in every test: each
    test starts with none of them counted."""
    _redis_forget("wedsync:audit-refusals:*", "wedsync:address-*", "wedsync-rate:*")


@pytest.fixture
def party(db: None) -> WeddingParty:
    """A wedding with one member of every role; see :mod:`tests.personas`."""
    return make_wedding_party()
