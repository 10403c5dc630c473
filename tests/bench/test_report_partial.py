"""A run of some scenarios (``--only``) replaces theirs and keeps the other scenarios' figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report, report_docs


def _ratio(median: float) -> dict[str, object]:
    return {"median": median, "runs": [median], "spread": 0.05, "higher_is_better": False}


@pytest.fixture
def results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "ROOT", tmp_path.parent)
    return tmp_path


def test_accepting_one_scenario_keeps_the_others_accepted_figures(results_dir: Path) -> None:
    storm = {"medians": {}, "ratios": {"all_resumed_seconds product/ceiling": _ratio(7.0)}}
    report.accept("short", {"storm": storm})
    presence = {"medians": {}, "ratios": {"latency_ms_p99 product/ceiling": _ratio(30.0)}}

    report.accept("short", {"presence": presence})

    accepted = json.loads((results_dir / "short.json").read_text())
    assert accepted["summary"] == {"storm": storm, "presence": presence}
    assert set(accepted["scenario_accepted_at"]) == {"storm", "presence"}
    # Both are judged against the merged file: a worse storm is still named.
    worse_storm = {"medians": {}, "ratios": {"all_resumed_seconds product/ceiling": _ratio(9.0)}}
    verdicts = report.regressions("short", {"storm": worse_storm})
    assert any(v.startswith("WORSE storm") for v in verdicts)


def test_docs_of_a_partial_run_keep_the_other_scenarios_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(
        "# Benchmarks\n\nhand-written\n\n"
        "<!-- bench:short:begin (written) -->\n"
        "### Last short run: 2026-11-23 18:33 UTC, commit e80f7dc, 748 s\n\n"
        "#### Reconnect storm\n\nstorm table\n\n"
        "#### Presence churn\n\nNot run: later.\n\n"
        "![bench-short-latency-vs-load.png](img/bench-short-latency-vs-load.png)\n\n"
        "<!-- bench:short:end -->\n\ntail\n"
    )
    monkeypatch.setattr(report_docs, "DOCS", docs)
    monkeypatch.setattr(report_docs, "_plots", lambda profile, results: ["bench-short-presence.png"])
    machine = {
        "date": "2026-12-01 22:30 UTC",
        "commit": "abc1234",
        "cores": 2,
        "cpu": "x",
        "python": "3.11",
        "redis_server": "r",
        "postgresql": "p",
        "versions": {},
    }
    results = {
        "profile": {"name": "short"},
        "servers": ["product"],
        "machine": machine,
        "seconds": 10.0,
        "presence": {"not_run": "testing"},
        "summary": {},
    }

    report_docs.write_docs("short", results, ["no ratio worse"])

    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written") and text.rstrip().endswith("tail")
    assert "storm table" in text
    assert "_From the run of 2026-11-23 18:33 UTC, commit e80f7dc._" in text
    assert "Not run: testing." in text and "Not run: later." not in text
    assert "(img/bench-short-latency-vs-load.png)" in text and "(img/bench-short-presence.png)" in text
    assert text.index("#### Reconnect storm") < text.index("#### Presence churn")
    assert "presence only; the other scenarios' figures are kept from earlier runs" in text
