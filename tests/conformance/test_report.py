"""Reading and judging the Autobahn report (tests/conformance/autobahn.py), on reports written here:
the checks the conformance run relies on must be able to fail."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from tests.conformance.autobahn import (
    AGENT,
    CASE_GROUPS,
    EXPECTED_CASES,
    CaseResult,
    fuzzing_spec,
    problems,
    read_report,
    summary_markdown,
)


def _result(case: str, behavior: str = "OK", close: str = "OK", code: int | None = 1000) -> CaseResult:
    return CaseResult(case=case, behavior=behavior, behavior_close=close, duration_ms=3, remote_close_code=code)


def _full_run(*extra: CaseResult) -> dict[str, CaseResult]:
    """EXPECTED_CASES cases over every group: 3.2 NON-STRICT, 7.13.1 INFORMATIONAL, ``extra``, and
    enough made-up passing cases to fill the count."""
    groups = list(CASE_GROUPS)
    named = [_result("3.2", "NON-STRICT"), _result("7.13.1", "INFORMATIONAL", "INFORMATIONAL"), *extra]
    cases = [f"{groups[n % len(groups)]}.{n}.0" for n in range(EXPECTED_CASES - len(named))]
    return {**{case: _result(case) for case in cases}, **{result.case: result for result in named}}


def test_a_run_where_every_case_is_ok_non_strict_or_informational_conforms() -> None:
    assert problems(_full_run(), exceptions={}) == []


def test_a_failed_case_or_a_wrong_close_is_a_problem() -> None:
    run = _full_run(
        _result("1.1.1", "FAILED", "OK", 1000),
        _result("9.1.4", "OK", "WRONG CODE", 1009),
        _result("7.1.1", "UNIMPLEMENTED", "OK"),
    )

    found = problems(run, exceptions={})

    assert found == [
        "1.1.1: FAILED, close OK (remote close code 1000)",
        "7.1.1: UNIMPLEMENTED, close OK (remote close code 1000)",
        "9.1.4: OK, close WRONG CODE (remote close code 1009)",
    ]


def test_a_documented_exception_is_accepted_and_a_stale_one_reported() -> None:
    run = _full_run(_result("5.1", "FAILED"))
    failing_case_exception = {"5.1": "why it may fail"}
    assert problems(run, exceptions=failing_case_exception) == []

    stale = problems(_full_run(), exceptions={"3.2": "no longer needed"})
    assert stale == ["3.2 passes now (NON-STRICT): drop its exception"]


def test_missing_cases_and_missing_groups_are_problems() -> None:
    run = {case: result for case, result in _full_run().items() if not case.startswith("10.")}

    found = problems(run, exceptions={})

    assert found[0].startswith(f"{len(run)} cases ran, autobahntestsuite 25.10.1 has {EXPECTED_CASES}")
    assert "no case of group 10 ran" in found


def test_a_case_outside_the_groups_run_is_a_problem() -> None:
    run = _full_run(_result("12.1.1"))

    assert problems(run, exceptions={}) == ["case 12.1.1 is outside groups 1-7, 9, 10"]


def test_the_suites_index_is_read_per_case(tmp_path: Path) -> None:
    index = {
        AGENT: {
            "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "duration": 2, "remoteCloseCode": 1000},
            "6.4.4": {"behavior": "NON-STRICT", "behaviorClose": "OK", "duration": 15567, "remoteCloseCode": 1007},
            "7.13.2": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL", "duration": 1},
        }
    }
    (tmp_path / "index.json").write_text(json.dumps(index))

    assert read_report(tmp_path) == {
        "1.1.1": CaseResult("1.1.1", "OK", "OK", 2, 1000),
        "6.4.4": CaseResult("6.4.4", "NON-STRICT", "OK", 15567, 1007),
        "7.13.2": CaseResult("7.13.2", "INFORMATIONAL", "INFORMATIONAL", 1, None),
    }


def test_the_spec_names_the_agent_the_echo_and_the_cases(tmp_path: Path) -> None:
    spec = fuzzing_spec(url="ws://127.0.0.1:1/ws/conformance/echo/", outdir=tmp_path, cases=["9.*"], exclude=["9.1.6"])

    assert spec["servers"] == [{"agent": AGENT, "url": "ws://127.0.0.1:1/ws/conformance/echo/"}]
    assert (spec["cases"], spec["exclude-cases"], spec["outdir"]) == (["9.*"], ["9.1.6"], str(tmp_path))


def test_the_summary_counts_each_group_by_behaviour_and_lists_the_exceptions() -> None:
    run = _full_run(_result("5.1", "FAILED"))

    text = summary_markdown(
        run,
        versions={"autobahntestsuite": "25.10.1"},
        command="make conformance",
        day=datetime.date(2026, 12, 4),
        wall_seconds=17.04,
        exceptions={"5.1": "a reason"},
    )

    group_3 = [result for result in run.values() if result.group == "3"]
    ok_3 = sum(result.behavior == "OK" for result in group_3)
    assert f"| 3 Reserved Bits | {len(group_3)} | {ok_3} | 1 | 0 | 0 |" in text
    assert f"| **all** | **{len(run)}** | **{len(run) - 3}** | **1** | **1** | **1** |" in text
    assert "- NON-STRICT: 3.2." in text and "- INFORMATIONAL: 7.13.1." in text and "- Other: 5.1." in text
    assert "- 5.1: a reason" in text
    assert "- Date: 2026-12-04" in text and "17.0 s" in text and "- autobahntestsuite: 25.10.1" in text
