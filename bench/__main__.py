"""Run the benchmark: every scenario against the product, the ceiling and the baseline, side by side.

    .venv/bin/python -m bench            # short: a few minutes (make bench)
    .venv/bin/python -m bench --full     # the full sizes of PRODUCT.md (make bench FULL=1)
    .venv/bin/python -m bench --only bigroom --servers product,ceiling --repeats 1

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379: it creates the scratch database
``wedsync_bench``, uses Redis database 3 (``BENCH_REDIS_DB``), starts and stops its own servers.
At the end it writes ``var/bench-last-<profile>.json``, rewrites its section of
``docs/benchmarks.md`` with tables and the plots under ``docs/img/``, and names every ratio that
got worse than the accepted run (``bench/results/<profile>.json``) by more than the spread it
measured between repeats. ``--accept`` makes this run the accepted one.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import report, report_docs, scenarios, servers

SERVER_KINDS = ("product", "ceiling", "baseline")


@dataclass(frozen=True)
class Profile:
    name: str
    weddings: int  # Saturday peak and the storm share this seed: weddings x 200 members
    saturday_rate: float  # publishes per wedding per second
    saturday_seconds: float
    room_rates: list[float]  # paced publishes per second into the 1,000-socket room, rising
    room_seconds: float
    burst: int
    sizes: list[int] = field(default_factory=list)
    storm_weddings: int = 10  # x 200 = 2,000 sockets
    # Presence churn: storm_weddings x 200 members, each sending presence updates; total rates
    # (updates/s over all members) rising, the headline at presence_rate.
    presence_rates: list[float] = field(default_factory=lambda: [100.0, 200.0, 400.0])
    presence_rate: float = 400.0  # 2,000 members: one change per member every 5 s
    presence_seconds: float = 10.0
    # Shared records (issue 18): one wedding of 200 members, records_editors vendor assistants among
    # them besides the crew, editing a timeline of records_items items at records_rate edits/s.
    records_rate: float = 20.0
    records_seconds: float = 30.0
    records_warmup: float = 2.0
    records_items: int = 50
    records_editors: int = 20
    # Server-side publish over HTTP (issue 20): http_weddings x http_members, the planners publishing
    # at each total rate (events/s over all weddings) in turn, over sockets and over HTTP.
    http_weddings: int = 50
    http_members: int = 20
    # Steps of ~1.25-1.33x, so the ratio of two variants' capacities is known within that: each
    # rate x http_seconds / http_weddings is whole, so every planner sends the same count.
    http_rates: list[float] = field(
        default_factory=lambda: [50.0, 75.0, 100.0, 125.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 600.0, 800.0]
    )
    http_seconds: float = 6.0
    http_warmup: float = 2.0
    repeats: int = 2


PROFILES = {
    # 10 weddings x 200 at 5/s offers 10,000 deliveries/s. The full Saturday is issue 23's 100
    # weddings x 200 but for one: this machine caps a process at 20,000 open files (a hard limit
    # it will not raise), and the node needs a few beside its sockets (docs/benchmarks.md).
    "short": Profile(
        name="short",
        weddings=10,
        saturday_rate=5,
        saturday_seconds=8,
        room_rates=[5, 10, 20, 40, 80],
        room_seconds=4,
        burst=50,
        sizes=[100, 400],
    ),
    "full": Profile(
        name="full",
        weddings=99,
        saturday_rate=1,
        saturday_seconds=30,
        room_rates=[2, 5, 10, 15, 20, 30, 40, 60, 80, 120],
        room_seconds=8,
        burst=200,
        sizes=[100, 250, 500],
        presence_rates=[100, 200, 400, 800],
        presence_seconds=20,
        records_seconds=60,
        http_rates=[50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1200, 1600],
        http_seconds=15,
        repeats=3,
    ),
}


def _run_scenario(name: str, profile: Profile, kinds: list[str], workers: int) -> dict[str, Any]:
    env = servers.environment()
    runs: list[dict[str, Any]] = []
    for repeat in range(profile.repeats):
        one: dict[str, Any] = {}
        if name in ("saturday", "storm", "presence"):
            weddings = servers.seed(
                env, weddings=profile.weddings if name == "saturday" else profile.storm_weddings, members=200
            )
        elif name == "records":
            weddings = servers.seed(
                env,
                weddings=1,
                members=200,
                editors=profile.records_editors,
                timeline_items=profile.records_items,
            )
        elif name == "http_publish":
            weddings = servers.seed(env, weddings=profile.http_weddings, members=profile.http_members)
        else:
            weddings = servers.seed(env, weddings=1, members=1000)
        for kind in kinds:
            _say(f"{name} [{repeat + 1}/{profile.repeats}] on {kind}")
            if name == "saturday":
                one[kind] = scenarios.saturday_peak(
                    kind, env, weddings, rate=profile.saturday_rate, seconds=profile.saturday_seconds, workers=workers
                )
            elif name == "bigroom":
                one[kind] = scenarios.big_room(
                    kind,
                    env,
                    weddings,
                    rates=profile.room_rates,
                    seconds=profile.room_seconds,
                    burst=profile.burst,
                    workers=workers,
                )
            elif name == "sizes":
                one[kind] = scenarios.room_sizes(
                    kind, env, weddings, sizes=profile.sizes, burst=profile.burst, workers=workers
                )
            elif name == "storm":
                one[kind] = scenarios.reconnect_storm(kind, env, weddings, rate=1, before=3, after=3, workers=workers)
            elif name == "presence":
                one[kind] = scenarios.presence_churn(
                    kind,
                    env,
                    weddings,
                    rates=profile.presence_rates,
                    churn_rate=profile.presence_rate,
                    seconds=profile.presence_seconds,
                    workers=workers,
                )
            elif name == "records":
                one[kind] = scenarios.shared_records(
                    kind,
                    env,
                    weddings,
                    rate=profile.records_rate,
                    seconds=profile.records_seconds,
                    warmup=profile.records_warmup,
                    workers=workers,
                )
            elif name == "http_publish":
                one[kind] = scenarios.http_publish(
                    kind,
                    env,
                    weddings,
                    rates=profile.http_rates,
                    seconds=profile.http_seconds,
                    warmup=profile.http_warmup,
                    repeat=repeat,
                    workers=workers,
                )
            _say(f"  {report.headline(name, one[kind])}")
        runs.append(one)
    return {"runs": runs}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="WedSync Realtime benchmark (docs/benchmarks.md).")
    parser.add_argument("--full", action="store_true", help="the full sizes (tens of minutes)")
    parser.add_argument(
        "--only",
        default="saturday,bigroom,sizes,storm,presence,records,http_publish",
        help="comma-separated scenarios",
    )
    parser.add_argument("--servers", default=",".join(SERVER_KINDS), help="comma-separated server kinds")
    parser.add_argument("--repeats", type=int, help="override the profile's repeats (1-5)")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes for the receivers")
    parser.add_argument("--accept", action="store_true", help="make this run the accepted one")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    profile = PROFILES["full" if args.full else "short"]
    if args.repeats is not None:
        if not 1 <= args.repeats <= 5:
            parser.error("--repeats: 1 to 5")
        profile = Profile(**{**profile.__dict__, "repeats": args.repeats})
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    if unknown := set(kinds) - set(servers.COMMANDS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    started = time.monotonic()
    results: dict[str, Any] = {"profile": profile.__dict__, "servers": kinds, "machine": report.machine()}
    try:
        for name in names:
            if name not in scenarios.SCENARIOS:
                parser.error(f"unknown scenario {name!r}")
            results[name] = _run_scenario(name, profile, kinds, args.workers)
    finally:
        servers.drop_scratch_database()
    results["seconds"] = round(time.monotonic() - started, 1)
    summary = report.summarise(results)
    results["summary"] = summary
    report.save_last(profile.name, results)
    verdicts = report.regressions(profile.name, summary)
    if args.accept:
        report.accept(profile.name, summary)
        verdicts.append(f"this run is now the accepted one (bench/results/{profile.name}.json)")
    if not args.no_docs:
        report_docs.write_docs(profile.name, results, verdicts)
    print(report.text_summary(results, verdicts))


if __name__ == "__main__":
    main()
