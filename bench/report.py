"""Figures into ratios, and ratios against the accepted run (docs/benchmarks.md shows them: bench.report_docs)."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.servers import ROOT

RESULTS = ROOT / "bench" / "results"

# The figures that make a scenario's ratios, and which way is better.
HIGHER_IS_BETTER = {
    "deliveries_per_s",
    "capacity_deliveries_per_s",
    "burst_deliveries_per_s",
    "connects_per_s",
    "diffs_per_s",
    "capacity_publishes_per_s",
}
KEY_FIGURES = {
    "saturday": [
        "deliveries_per_s",
        "latency_ms_p99",
        "connects_per_s",
        "rss_kb_per_socket",
        "rss_kb_per_added_socket",
    ],
    "bigroom": [
        "capacity_deliveries_per_s",
        "burst_deliveries_per_s",
        "burst_latency_ms_p99",
        "rss_kb_per_socket",
        "rss_kb_per_added_socket",
    ],
    "sizes": [],  # one figure per size, named below
    "storm": ["all_resumed_seconds"],
    # At the churn step (profile presence_rate): propagation and the server's CPU per update.
    "presence": ["latency_ms_p50", "latency_ms_p99", "server_cpu_us_per_update"],
    # The engine's (sync) where the server has one, else the same plan's publishes (the ceiling).
    "records": ["reply_ms_p50", "reply_ms_p99", "server_cpu_us_per_edit"],
    # HTTP's (issue 20): its capacity, and at the rate both variants carried, p99 and CPU per publish.
    "http_publish": [
        "capacity_publishes_per_s",
        "p99_ms_at_common_rate",
        "server_cpu_us_per_publish_at_common_rate",
    ],
}
# Ratios between two figures of the product in one scenario: (scenario, numerator, denominator).
PHASE_RATIOS = [("records", "sync", "publish"), ("http_publish", "http", "socket")]


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {
        name: metadata.version(name)
        for name in ("django", "channels", "channels-redis", "daphne", "twisted", "redis", "websockets", "picows")
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": len([line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor")]),
        "python": platform.python_version(),
        "versions": versions,
        "redis_server": _command_version(["redis-server", "--version"]),
        "postgresql": _command_version(["psql", "--version"]),
        "commit": _command_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


def _command_version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()[:80]  # noqa: S603
    except OSError:
        return "unknown"


def _flat(name: str, figures: Any) -> dict[str, float | None]:
    """A server's key figures for one run of a scenario, flat."""
    if name == "sizes":
        return {f"size_{row['members']}_deliveries_per_s": row["deliveries_per_s"] for row in figures}
    if name == "presence":
        return {key: figures["churn"].get(key) for key in KEY_FIGURES[name]}
    if name == "records":
        phase = figures.get("sync") or figures.get("publish") or {}
        return {key: phase.get(key) for key in KEY_FIGURES[name]}
    if name == "http_publish":
        return {key: figures["http"].get(key) for key in KEY_FIGURES[name]}
    flat = {key: figures.get(key) for key in KEY_FIGURES[name]}
    if name == "bigroom":
        flat["burst_deliveries_per_s"] = figures["burst"]["deliveries_per_s"]
        flat["burst_latency_ms_p99"] = figures["burst"]["latency_ms_p99"]
    return flat


def _higher_is_better(figure: str) -> bool:
    return figure in HIGHER_IS_BETTER or figure.endswith("deliveries_per_s")


def headline(name: str, figures: Any) -> str:
    if isinstance(figures, dict) and "not_run" in figures:
        return f"not run: {figures['not_run']}"
    if name == "http_publish":
        return _http_publish_headline(figures)
    flat = _flat(name, figures)
    if name == "presence":
        figures = figures["churn"]
    if name == "records":
        figures = figures.get("sync") or figures.get("publish")
    lost = figures.get("lost") if isinstance(figures, dict) else None
    duplicated = figures.get("stale" if name == "presence" else "duplicates") if isinstance(figures, dict) else None
    extra = f", lost {lost}, duplicated {duplicated}" if lost is not None else ""
    if name == "saturday" and figures.get("member_cache_hit_ratio") is not None:  # issue 21: over 0.95
        extra += f", member cache hit ratio {figures['member_cache_hit_ratio']}"
    return ", ".join(f"{key} {value}" for key, value in flat.items()) + extra


def _http_publish_headline(figures: dict[str, Any]) -> str:
    """Each variant's capacity and its last step, then the ratio against issue 20's target."""
    parts = []
    for variant in ("socket", "http"):
        phase = figures[variant]
        last = phase["steps"][-1] if phase["steps"] else {}
        parts.append(
            f"{variant} {phase['capacity_publishes_per_s']}/s (last step {last.get('publishes_offered_per_s')}/s:"
            f" p99 {last.get('latency_ms_p99')} ms, lost {last.get('lost')}, refused {last.get('publish_refused')})"
        )
    ratio = figures["capacity_ratio_http_socket"]
    verdict = "met" if figures["target_met"] else "not met"
    return "; ".join(parts) + f"; http/socket {ratio} (target >= {figures['capacity_ratio_target']}: {verdict})"


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per scenario: each server's median figures, and the product's ratios with their spread."""
    summary: dict[str, Any] = {}
    for name, outcome in results.items():
        if not isinstance(outcome, dict) or "runs" not in outcome:
            continue
        runs = outcome["runs"]
        ran = [kind for kind in runs[0] if "not_run" not in runs[0][kind]]  # a server a scenario skips has no figures
        medians: dict[str, dict[str, float | None]] = {}
        for kind in ran:
            per_run = [_flat(name, run[kind]) for run in runs]
            medians[kind] = {figure: _median([r[figure] for r in per_run]) for figure in per_run[0]}
        ratios: dict[str, dict[str, Any]] = {}
        for other in ("ceiling", "baseline"):
            if "product" not in ran or other not in ran:
                continue
            for figure in _flat(name, runs[0]["product"]):
                values = [_ratio(_flat(name, run["product"])[figure], _flat(name, run[other])[figure]) for run in runs]
                ratios[f"{figure} product/{other}"] = _ratio_entry(figure, values)
        for scenario, ours, theirs in PHASE_RATIOS:
            if scenario != name or "product" not in ran:
                continue
            for figure in KEY_FIGURES[name]:
                values = [
                    _ratio(run["product"].get(ours, {}).get(figure), run["product"].get(theirs, {}).get(figure))
                    for run in runs
                ]
                ratios[f"{figure} {ours}/{theirs}"] = _ratio_entry(figure, values)
        summary[name] = {"medians": medians, "ratios": ratios}
    return summary


def _ratio_entry(figure: str, values: list[float | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    middle = _median(known)
    return {
        "median": middle,
        "runs": values,
        # Relative spread between repeats; None when there was one repeat only.
        "spread": round((max(known) - min(known)) / middle, 3) if len(known) > 1 and middle else None,
        "higher_is_better": _higher_is_better(figure),
    }


def _median(values: list[Any]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours is not None and theirs else None


def save_last(profile: str, results: dict[str, Any]) -> None:
    path = ROOT / "var" / f"bench-last-{profile}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def accept(profile: str, summary: dict[str, Any]) -> None:
    """Make this run's scenarios the accepted ones. Per scenario: a run of some scenarios only
    (``--only``) replaces those and keeps the others' accepted figures as they were."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{profile}.json"
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    previous = json.loads(path.read_text()) if path.exists() else {}
    merged = {**previous.get("summary", {}), **summary}
    when = {name: previous.get("accepted_at", now) for name in previous.get("summary", {})}
    when.update(previous.get("scenario_accepted_at", {}))
    when.update(dict.fromkeys(summary, now))
    accepted = {"accepted_at": now, "scenario_accepted_at": when, "summary": merged}
    path.write_text(json.dumps(accepted, indent=1, sort_keys=True) + "\n")


def regressions(profile: str, summary: dict[str, Any]) -> list[str]:
    """Each ratio worse than the accepted run's by more than the spread measured between repeats."""
    path = RESULTS / f"{profile}.json"
    if not path.exists():
        return [f"no accepted run yet ({path.relative_to(ROOT)}): run with --accept to make one"]
    accepted = json.loads(path.read_text())["summary"]
    verdicts = []
    for name, now in summary.items():
        for ratio, figure in now["ratios"].items():
            before = accepted.get(name, {}).get("ratios", {}).get(ratio)
            if before is None or before["median"] is None or figure["median"] is None:
                continue
            spreads = [s for s in (figure["spread"], before["spread"]) if s is not None]
            if not spreads:
                verdicts.append(f"{name}: {ratio} not judged (no spread: one repeat)")
                continue
            tolerance = max(spreads)
            change = (figure["median"] - before["median"]) / before["median"]
            worse = -change if figure["higher_is_better"] else change
            if worse > tolerance:
                verdicts.append(
                    f"WORSE {name}: {ratio} {before['median']} -> {figure['median']} "
                    f"({worse:+.0%} worse, spread {tolerance:.0%})"
                )
    if not any(v.startswith("WORSE") for v in verdicts):
        verdicts.append(f"no ratio worse than the accepted run ({json.loads(path.read_text())['accepted_at']})")
    return verdicts


# --- docs ------------------------------------------------------------------------------------------


def text_summary(results: dict[str, Any], verdicts: list[str]) -> str:
    lines = [f"bench ({results['profile']['name']}) finished in {results['seconds']:.0f} s"]
    for name, figures in results["summary"].items():
        for ratio, value in figures["ratios"].items():
            lines.append(f"  {name}: {ratio} = {value['median']} (spread {value['spread']})")
    lines += [f"  {v}" for v in verdicts]
    return "\n".join(lines)
