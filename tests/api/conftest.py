from __future__ import annotations

from collections.abc import Generator

import pytest

_CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed
    return report


def call_passed(item: pytest.Item) -> bool:
    """Whether the test's own call passed, for a fixture's teardown that checks more only then."""
    return item.stash.get(_CALL_PASSED, False)
