"""The Autobahn testsuite's fuzzing client (cases 1-7, 9, 10) against a real daphne node running the
product's socket stack behind the test-only echo route: every case passes or is a documented
exception (decision 0020). The suite is installed into .conformance/ on first use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conformance.autobahn import (
    MAX_MESSAGE,
    RUN_SECONDS,
    SuiteUnavailable,
    ensure_suite,
    problems,
    python27,
    run_fuzzing,
)
from tests.realtime.nodes import echo_node

# The install takes ~10 s with pip's wheel cache (~30 s without), the run ~17 s.
pytestmark = [pytest.mark.requires_python27, pytest.mark.timeout(RUN_SECONDS + 600)]

# Plain daphne drops an application's empty message: these four never got their echo.
EMPTY_MESSAGE_CASES = ("1.1.1", "1.2.1", "6.1.1", "6.1.2")


def test_every_autobahn_case_passes_against_the_products_socket_stack(
    tmp_path: Path, not_run: Callable[[str, str], NoReturn]
) -> None:
    python = python27()
    assert python is not None  # requires_python27 skipped (or stopped) the run otherwise
    try:
        wstest = ensure_suite(python=python)
    except SuiteUnavailable as error:
        not_run("the Autobahn testsuite", str(error))

    with echo_node(tmp_path, max_frame=MAX_MESSAGE) as node:
        results = run_fuzzing(wstest=wstest, url=node.echo_url, workdir=tmp_path)

    assert problems(results) == []
    assert {case: results[case].behavior for case in EMPTY_MESSAGE_CASES} == dict.fromkeys(EMPTY_MESSAGE_CASES, "OK")
