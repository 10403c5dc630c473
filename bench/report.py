"""Figures into ratios, ratios against the accepted run, and both into docs/benchmarks.md with plots."""

from __future__ import annotations

import json
import platform
import re
import statistics
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.servers import ROOT

RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img"

# The figures that make a scenario's ratios, and which way is better.
HIGHER_IS_BETTER = {
    "deliveries_per_s",
    "capacity_deliveries_per_s",
    "burst_deliveries_per_s",
    "connects_per_s",
    "diffs_per_s",
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
}
# Ratios between two figures of the product in one scenario: (scenario, numerator, denominator).
PHASE_RATIOS = [("records", "sync", "publish")]


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
    flat = _flat(name, figures)
    if name == "presence":
        figures = figures["churn"]
    if name == "records":
        figures = figures.get("sync") or figures.get("publish")
    lost = figures.get("lost") if isinstance(figures, dict) else None
    duplicated = figures.get("stale" if name == "presence" else "duplicates") if isinstance(figures, dict) else None
    extra = f", lost {lost}, duplicated {duplicated}" if lost is not None else ""
    return ", ".join(f"{key} {value}" for key, value in flat.items()) + extra


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


def _plots(profile: str, results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMAGES.mkdir(parents=True, exist_ok=True)
    written = []
    room = results.get("bigroom", {}).get("runs")
    if room:
        figure, axis = plt.subplots(figsize=(7, 4.2))
        for kind, figures in room[0].items():
            steps = figures["steps"]
            offered = [s["deliveries_offered_per_s"] for s in steps]
            for key, style in (("latency_ms_p50", "--"), ("latency_ms_p99", "-")):
                axis.plot(
                    offered, [s[key] or float("nan") for s in steps], style, marker="o", label=f"{kind} {key[11:]}"
                )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("deliveries offered per second (1,000-socket room)")
        axis.set_ylabel("delivery latency, ms")
        axis.axhline(100, color="grey", linewidth=0.8)
        written.append(
            _save(
                plt,
                figure,
                axis,
                f"Latency against load ({profile} run, first repeat)",
                f"bench-{profile}-latency-vs-load.png",
            )
        )
    sizes = results.get("sizes", {}).get("runs")
    if sizes:
        figure, axis = plt.subplots(figsize=(7, 4.2))
        for kind, rows in sizes[0].items():
            points = [(row["members"], row["deliveries_per_s"]) for row in rows]
            if room and kind in room[0]:
                points.append((room[0][kind]["connected"], room[0][kind]["burst"]["deliveries_per_s"]))
            points.sort()
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=kind)
        axis.set_xlabel("sockets in the room")
        axis.set_ylabel("deliveries per second (burst)")
        axis.set_yscale("log")
        title = f"Burst throughput against room size ({profile} run, first repeat)"
        written.append(_save(plt, figure, axis, title, f"bench-{profile}-deliveries-vs-room-size.png"))
    presence = results.get("presence", {}).get("runs")
    if presence:
        figure, axis = plt.subplots(figsize=(7, 4.2))
        for index, (kind, figures) in enumerate(presence[0].items()):
            steps = figures["steps"]
            offered = [s["updates_offered_per_s"] for s in steps]
            for key, style in (("latency_ms_p50", "--"), ("latency_ms_p99", "-")):
                axis.plot(
                    offered,
                    [s[key] or float("nan") for s in steps],
                    style,
                    color=f"C{index}",
                    marker="o",
                    label=f"{kind} {key[11:]}",
                )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("presence updates offered per second (2,000 members, 10 weddings)")
        axis.set_ylabel("propagation to each viewer, ms")
        axis.axhline(200, color="grey", linewidth=0.8)
        title = f"Presence propagation against churn ({profile} run, first repeat)"
        written.append(_save(plt, figure, axis, title, f"bench-{profile}-presence-latency-vs-updates.png"))
    return written


def _save(plt: Any, figure: Any, axis: Any, title: str, name: str) -> str:
    axis.legend(fontsize=7)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(IMAGES / name, dpi=90)
    plt.close(figure)
    return name


def _table(rows: list[list[Any]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(str(c) for c in head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


_DELIVERY = ["deliveries_per_s", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "lost", "duplicates"]
_SCENARIO_COLUMNS = {
    "saturday": [
        "connected",
        "publishes_per_s",
        *_DELIVERY,
        "server_cpu_cores",
        "server_cpu_us_per_delivery",
        "rss_kb_per_socket",
        "rss_kb_per_added_socket",
        "connects_per_s",
    ],
    "storm": [
        "dropped",
        "resumed",
        "all_resumed_seconds",
        "resumed_p50_seconds",
        "server_cpu_ms_per_resume",
        "published",
        "expected",
        "lost",
        "duplicates",
        "replayed",
        "latency_ms_p99",
        "resume_attempts",
        "publisher_error",
    ],
}


def _scenario_markdown(name: str, outcome: dict[str, Any], summary: dict[str, Any]) -> str:
    if "not_run" in outcome:
        return f"Not run: {outcome['not_run']}.\n"
    parts = []
    for index, run in enumerate(outcome["runs"], start=1):
        parts.append(f"Repeat {index}:\n")
        if name in _SCENARIO_COLUMNS:
            columns = _SCENARIO_COLUMNS[name]
            parts.append(
                _table([["server", *columns], *[[kind, *(f.get(c) for c in columns)] for kind, f in run.items()]])
            )
        elif name == "bigroom":
            columns = ["deliveries_offered_per_s", *_DELIVERY, "server_cpu_cores"]
            rows: list[list[Any]] = [["server", *columns]]
            for kind, figures in run.items():
                rows += [[kind, *(step.get(c) for c in columns)] for step in figures["steps"]]
                burst = figures["burst"]
                rows.append(
                    [
                        f"{kind} burst of {burst['published']}",
                        burst["expected"],
                        burst["deliveries_per_s"],
                        burst["latency_ms_p50"],
                        burst["latency_ms_p95"],
                        burst["latency_ms_p99"],
                        burst["lost"],
                        burst["duplicates"],
                        burst["server_cpu_cores"],
                    ]
                )
            parts.append(_table(rows))
            parts.append(
                "\nCapacity at p99 <= 100 ms, everything delivered: "
                + ", ".join(f"{kind} {f['capacity_deliveries_per_s']:,.0f}/s" for kind, f in run.items())
                + "; idle KB/socket: "
                + ", ".join(f"{kind} {f['rss_kb_per_socket']}" for kind, f in run.items())
                + "; per socket added after the first tenth: "
                + ", ".join(f"{kind} {f.get('rss_kb_per_added_socket')}" for kind, f in run.items())
            )
        elif name == "presence":
            columns = [
                "updates_offered_per_s",
                "updates_per_s",
                "updates_refused",
                "expected",
                "delivered",
                "lost",
                "superseded",
                "stale",
                "unexpected",
                "latency_ms_p50",
                "latency_ms_p95",
                "latency_ms_p99",
                "latency_ms_max",
                "server_cpu_cores",
                "server_cpu_us_per_update",
                "redis_cpu_cores",
                "layer_queue_peak",
                "layer_pubsub_buffer_peak_bytes",
            ]
            rows = [["server", *columns]]
            for kind, figures in run.items():
                churn = figures["churn"]["updates_offered_per_s"]
                rows += [
                    [
                        f"{kind} (churn)" if step["updates_offered_per_s"] == churn else kind,
                        *(step.get(c) for c in columns),
                    ]
                    for step in figures["steps"]
                ]
            parts.append(_table(rows))
            parts.append(
                "\nConnected: "
                + ", ".join(f"{kind} {f['connected']} of {f['sockets']}" for kind, f in run.items())
                + "; refusals: "
                + (
                    "; ".join(f"{kind}: {r}" for kind, f in run.items() for s in f["steps"] for r in s["refusals"][:1])
                    or "none"
                )
            )
        elif name == "records":
            parts.append(_records_markdown(run))
        elif name == "sizes":
            columns = [
                "members",
                "expected",
                "deliveries_per_s",
                "latency_ms_p50",
                "latency_ms_p99",
                "lost",
                "duplicates",
            ]
            parts.append(
                _table(
                    [
                        ["server", *columns],
                        *[[kind, *(row.get(c) for c in columns)] for kind, rows_ in run.items() for row in rows_],
                    ]
                )
            )
        parts.append("\n")
    ratios = summary.get(name, {}).get("ratios", {})
    if ratios:
        parts.append("Ratios (median of the repeats; spread = (max - min) / median between repeats):\n")
        parts.append(
            _table(
                [["ratio", "median", "per repeat", "spread", "better when"]]
                + [
                    [
                        key,
                        r["median"],
                        ", ".join(str(v) for v in r["runs"]),
                        r["spread"],
                        "higher" if r["higher_is_better"] else "lower",
                    ]
                    for key, r in ratios.items()
                ]
            )
        )
        parts.append("\n")
    return "\n".join(parts)


_RECORDS_COLUMNS = [
    "edits_sent",
    "edits_per_s",
    "conflicting_sent",
    "outcomes",
    "reply_ms_p50",
    "reply_ms_p95",
    "reply_ms_p99",
    "reply_ms_max",
    "expected",
    "delivered",
    "lost",
    "duplicates",
    "unexpected",
    "leaked",
    "notices_expected",
    "notices_delivered",
    "notices_lost",
    "latency_ms_p50",
    "latency_ms_p99",
    "server_cpu_cores",
    "server_cpu_us_per_edit",
    "server_cpu_us_per_edit_above_idle",
]


def _records_markdown(run: dict[str, Any]) -> str:
    """One row per server and plan (sync: the engine; publish: the same edits as chat messages)."""
    rows: list[list[Any]] = [["server", "plan", *_RECORDS_COLUMNS]]
    skipped = []
    for kind, figures in run.items():
        if "not_run" in figures:
            skipped.append(f"{kind}: not run ({figures['not_run']})")
            continue
        for plan in ("sync", "publish"):
            if plan in figures:
                phase = figures[plan]
                outcomes = ", ".join(f"{k} {v}" for k, v in phase["outcomes"].items())
                rows.append([kind, plan, *(outcomes if c == "outcomes" else phase.get(c) for c in _RECORDS_COLUMNS)])
    lines = [_table(rows)]
    connected = ", ".join(
        f"{kind} {f['connected']} of {f['sockets']} ({f['editors']} editors; idle, the server used"
        f" {f.get('server_idle_cpu_cores')} cores)"
        for kind, f in run.items()
        if "connected" in f
    )
    lines.append(f"\nConnected: {connected}" + "".join(f"; {line}" for line in skipped))
    refusals = [
        f"{kind} {plan}: {r}"
        for kind, f in run.items()
        for plan in ("sync", "publish")
        for r in f.get(plan, {}).get("refusals", [])[:1]
    ]
    if refusals:
        lines.append("Refusals: " + "; ".join(refusals))
    return "\n".join(lines)


TITLES = {
    "saturday": "Saturday peak",
    "bigroom": "Big room: one wedding, 1,000 sockets, paced loads rising, then a burst",
    "sizes": "Burst throughput against room size",
    "storm": "Reconnect storm",
    "presence": "Presence churn",
    "records": "Shared records: 200 members, a 50-item timeline, 20 edits/s, 10 % conflicting",
}


def _old_blocks(section: str) -> tuple[dict[str, str], list[str]]:
    """An earlier section's scenario blocks (by scenario name) and image lines, each block saying
    which run it is from, so that a run of some scenarios keeps the others' figures."""
    header = re.search(r"### Last \w+ run: (.+?), commit (\w+)", section)
    origin = f"_From the run of {header.group(1)}, commit {header.group(2)}._\n" if header else ""
    names = {title: name for name, title in TITLES.items()}
    blocks: dict[str, str] = {}
    images: list[str] = []
    current: str | None = None
    body: list[str] = []
    for line in [*section.splitlines(), "#### <end>"]:
        if line.startswith("#### ") or line.startswith("![") or line.startswith("<!-- bench:"):
            if current is not None:
                text = "\n".join(body).strip("\n") + "\n"
                if not text.startswith("_From the run of") and origin:
                    text = origin + "\n" + text
                blocks[current] = text
            current, body = None, []
            if line.startswith("#### "):
                current = names.get(line[5:].strip())
            elif line.startswith("!["):
                images.append(line)
        elif current is not None:
            body.append(line)
    return blocks, images


def write_docs(profile: str, results: dict[str, Any], verdicts: list[str]) -> None:
    images = _plots(profile, results)
    info = results["machine"]
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    begin, end = f"<!-- bench:{profile}:begin", f"<!-- bench:{profile}:end -->"
    old_blocks: dict[str, str] = {}
    old_images: list[str] = []
    if begin in text and end in text:
        old_blocks, old_images = _old_blocks(text[text.index(begin) : text.index(end)])
    ran = [name for name in TITLES if name in results]
    kept = [name for name in TITLES if name not in results and name in old_blocks]
    scope = f" ({', '.join(ran)} only; the other scenarios' figures are kept from earlier runs)" if kept else ""
    origin = f"_From the run of {info['date']}, commit {info['commit']}._\n\n"
    lines = [
        f"<!-- bench:{profile}:begin (written by `python -m bench{' --full' if profile == 'full' else ''}`;"
        " edits here are overwritten) -->",
        f"### Last {profile} run: {info['date']}, commit {info['commit']}, {results['seconds']:.0f} s{scope}\n",
        f"Machine: {info['cores']} x {info['cpu']}; Python {info['python']}; {info['redis_server'][:40]};"
        f" {info['postgresql']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
        f"Profile: `{json.dumps(results['profile'])}`; servers: {', '.join(results['servers'])}.\n",
        "Against the accepted run:\n",
        *[f"- {v}" for v in verdicts],
        "",
    ]
    for name in TITLES:
        if name in results:
            markdown = _scenario_markdown(name, results[name], results["summary"])
            lines += [f"#### {TITLES[name]}\n", origin + markdown]
        elif name in kept:
            lines += [f"#### {TITLES[name]}\n", old_blocks[name]]
    lines += [f"![{image}](img/{image})\n" for image in images]
    lines += [f"{line}\n" for line in old_images if not any(f"(img/{image})" in line for image in images)]
    lines.append(f"<!-- bench:{profile}:end -->")
    section = "\n".join(lines)
    if begin in text and end in text:
        head = text[: text.index(begin)]
        tail = text[text.index(end) + len(end) :]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def text_summary(results: dict[str, Any], verdicts: list[str]) -> str:
    lines = [f"bench ({results['profile']['name']}) finished in {results['seconds']:.0f} s"]
    for name, figures in results["summary"].items():
        for ratio, value in figures["ratios"].items():
            lines.append(f"  {name}: {ratio} = {value['median']} (spread {value['spread']})")
    lines += [f"  {v}" for v in verdicts]
    return "\n".join(lines)
