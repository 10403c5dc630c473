"""The bench's section of docs/benchmarks.md: a table per scenario, the plots under docs/img/, and
the blocks of scenarios a partial run (``--only``) did not rerun, kept as they were."""

from __future__ import annotations

import json
import re
from typing import Any

from bench.servers import ROOT

DOCS = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img"


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
        "member_cache_hit_ratio",
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
        elif name == "http_publish":
            parts.append(_http_publish_markdown(run))
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


_HTTP_PUBLISH_COLUMNS = [
    "publishes_offered_per_s",
    "publishes_per_s",
    "publish_refused",
    "expected",
    "deliveries_per_s",
    "latency_ms_p50",
    "latency_ms_p99",
    "lost",
    "duplicates",
    "server_cpu_cores",
    "server_cpu_us_per_publish",
    "redis_cpu_cores",
    "loadgen_cpu_cores",
    "answer_ms_p50",
    "answer_ms_p99",
    "send_lag_ms_p99",
]


def _http_publish_markdown(run: dict[str, Any]) -> str:
    """One row per server, variant and step (socket: the planners' sockets; http: their POSTs), a
    step that missed the criterion marked, then each variant's capacity and the ratio."""
    rows: list[list[Any]] = [["server", "variant", *_HTTP_PUBLISH_COLUMNS]]
    skipped = []
    verdicts = []
    for kind, figures in run.items():
        if "not_run" in figures:
            skipped.append(f"{kind}: not run ({figures['not_run']})")
            continue
        for variant in ("socket", "http"):
            for step in figures[variant]["steps"]:
                label = variant if step["carried"] else f"{variant} (missed)"
                rows.append([kind, label, *(step.get(c) for c in _HTTP_PUBLISH_COLUMNS)])
        socket, http = figures["socket"], figures["http"]
        verdict = "met" if figures["target_met"] else "not met"
        verdicts.append(
            f"{kind}: socket {socket['capacity_publishes_per_s']:,.1f}/s,"
            f" http {http['capacity_publishes_per_s']:,.1f}/s"
            f"; http/socket {figures['capacity_ratio_http_socket']} (target >= {figures['capacity_ratio_target']}:"
            f" {verdict}); at {socket['common_rate_per_s']}/s, both carried: p99 socket"
            f" {socket['p99_ms_at_common_rate']} ms, http {http['p99_ms_at_common_rate']} ms; server CPU per"
            f" publish socket {socket['server_cpu_us_per_publish_at_common_rate']} us,"
            f" http {http['server_cpu_us_per_publish_at_common_rate']} us; order {', '.join(figures['order'])};"
            f" {figures['connected']} of {figures['sockets']} sockets connected"
        )
    lines = [_table(rows)]
    lines.append(
        "\nCapacity (the highest step with delivery p99 <= 100 ms, 0 lost, 0 refused or unanswered, and"
        " the rate kept up): " + ("; ".join(verdicts) or "none") + "".join(f"; {line}" for line in skipped)
    )
    refusals = [
        f"{kind}: {reason}"
        for kind, f in run.items()
        for step in f.get("http", {}).get("steps", [])
        for reason in step.get("refusals", [])[:1]
    ]
    if refusals:
        lines.append("Refusals over HTTP: " + "; ".join(refusals[:3]))
    return "\n".join(lines)


TITLES = {
    "saturday": "Saturday peak",
    "bigroom": "Big room: one wedding, 1,000 sockets, paced loads rising, then a burst",
    "sizes": "Burst throughput against room size",
    "storm": "Reconnect storm",
    "presence": "Presence churn",
    "records": "Shared records: 200 members, a 50-item timeline, 20 edits/s, 10 % conflicting",
    "http_publish": "HTTP publish: 50 weddings x 20 members, stepped rates, over sockets and over HTTP",
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
