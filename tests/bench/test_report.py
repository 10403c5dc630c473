"""The benchmark's regression verdicts: worse beyond the measured spread is named, noise is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report


def _summary(capacity_ratio: float, spread: float | None, p99_ratio: float = 2.0) -> dict[str, object]:
    return {
        "bigroom": {
            "medians": {},
            "ratios": {
                "capacity_deliveries_per_s product/ceiling": {
                    "median": capacity_ratio,
                    "runs": [capacity_ratio],
                    "spread": spread,
                    "higher_is_better": True,
                },
                "burst_latency_ms_p99 product/ceiling": {
                    "median": p99_ratio,
                    "runs": [p99_ratio],
                    "spread": spread,
                    "higher_is_better": False,
                },
            },
        }
    }


@pytest.fixture
def results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "ROOT", tmp_path.parent)
    return tmp_path


def test_a_drop_larger_than_the_spread_is_named(results_dir: Path) -> None:
    report.accept("short", _summary(0.60, 0.05))

    verdicts = report.regressions("short", _summary(0.45, 0.05))

    assert any(v.startswith("WORSE bigroom: capacity_deliveries_per_s product/ceiling 0.6 -> 0.45") for v in verdicts)


def test_a_change_within_the_spread_is_not(results_dir: Path) -> None:
    report.accept("short", _summary(0.60, 0.10))

    verdicts = report.regressions("short", _summary(0.57, 0.10, p99_ratio=2.1))

    assert not any(v.startswith("WORSE") for v in verdicts)
    assert verdicts[-1].startswith("no ratio worse than the accepted run")


def test_lower_is_better_figures_regress_upwards(results_dir: Path) -> None:
    report.accept("short", _summary(0.60, 0.05, p99_ratio=2.0))

    verdicts = report.regressions("short", _summary(0.70, 0.05, p99_ratio=3.0))

    worse = [v for v in verdicts if v.startswith("WORSE")]
    assert len(worse) == 1
    assert "burst_latency_ms_p99" in worse[0]


def test_one_repeat_is_not_judged_and_says_so(results_dir: Path) -> None:
    report.accept("short", _summary(0.60, None))

    verdicts = report.regressions("short", _summary(0.30, None))

    assert "not judged (no spread: one repeat)" in verdicts[0]


def test_no_accepted_run_says_how_to_make_one(results_dir: Path) -> None:
    assert "run with --accept" in report.regressions("full", _summary(0.6, 0.1))[0]


def test_summary_takes_medians_and_spread_between_repeats() -> None:
    def room(capacity: float) -> dict[str, object]:
        return {
            "capacity_deliveries_per_s": capacity,
            "rss_kb_per_socket": 30.0,
            "burst": {"deliveries_per_s": 1.0, "latency_ms_p99": 10.0},
        }

    results = {
        "bigroom": {
            "runs": [
                {"product": room(40_000), "ceiling": room(80_000)},
                {"product": room(45_000), "ceiling": room(75_000)},
                {"product": room(50_000), "ceiling": room(100_000)},
            ]
        }
    }

    ratio = report.summarise(results)["bigroom"]["ratios"]["capacity_deliveries_per_s product/ceiling"]

    assert ratio["runs"] == [0.5, 0.6, 0.5]
    assert ratio["median"] == 0.5
    assert ratio["spread"] == pytest.approx(0.2)
    json.dumps(ratio)  # stored as JSON in bench/results/
