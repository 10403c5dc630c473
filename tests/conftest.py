"""Shared test set-up: real services, loud reporting of what could not run, personas.

Tests that need Redis or PostgreSQL carry ``requires_redis`` / ``requires_postgres`` (whole
modules set ``pytestmark``). When a service does not answer, those tests are skipped and the run
ends with a banner naming them; with ``WEDSYNC_REQUIRE_SERVICES=1`` the run stops at once with a
failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.personas import WeddingParty, make_wedding_party

_SERVICE_MARKERS = {"requires_redis": "redis", "requires_postgres": "postgres"}
_not_run: dict[str, list[str]] = {}


def _missing_services() -> list[str]:
    return [name for name, up in settings.WEDSYNC_TEST_SERVICES.items() if not up]


def pytest_configure(config: pytest.Config) -> None:
    missing = _missing_services()
    if missing and os.environ.get("WEDSYNC_REQUIRE_SERVICES") == "1":
        urls = ", ".join(f"{name} at {settings.WEDSYNC_TEST_SERVICE_URLS[name]}" for name in missing)
        pytest.exit(f"WEDSYNC_REQUIRE_SERVICES=1 but these services do not answer: {urls}", returncode=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = set(_missing_services())
    for item in items:
        for marker, service in _SERVICE_MARKERS.items():
            if item.get_closest_marker(marker) and service in missing:
                url = settings.WEDSYNC_TEST_SERVICE_URLS[service]
                item.add_marker(pytest.mark.skip(reason=f"NOT RUN: needs {service}, which does not answer at {url}"))
                _not_run.setdefault(service, []).append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for service, nodeids in _not_run.items():
        terminalreporter.section(f"NOT RUN: {len(nodeids)} tests need {service}", sep="!", red=True, bold=True)
        for nodeid in nodeids:
            terminalreporter.write_line(f"  {nodeid}")
        terminalreporter.write_line(
            f"Start {service} (see README) or set WEDSYNC_REQUIRE_SERVICES=1 to make this a failure."
        )


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
