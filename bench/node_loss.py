"""The reconnect storm after a node loss (issue 22, decision 0045): three product nodes on one Redis
and one PostgreSQL, each socket on its user's node; one node is SIGKILLed while every planner
publishes, and its sockets resume on the two survivors, which end near their socket budget.

Each node runs with the product's load shedding on: ``REALTIME_SOCKET_BUDGET`` set so that the
survivors hold ``--fill`` of it once the lost node's sockets have moved (guests are refused from
90 % of it), and the event-loop-lag bound at its default. The sockets are ``bench.worker``'s, each
resuming as the project's clients do: after its own connection drops, with backoff and full
jitter, ``since`` its last seq, a little past any ``retry_after``; a connection refused by the dead
node sends it on at once to the next node of its order (``bench.resume.node_order``, spreading
them evenly, as the balancer's consistent hash by user does and its redispatch retries). The
planners are on the survivors: the scenario is the storm, not publishers losing their own socket.

Reported per repeat, against the storm's target (PRODUCT.md: the lost node's sockets all resumed
within 10 s, 0 lost, 0 duplicated): when the last resumed, the p50 and p99, attempts and refusals,
what each survivor holds against its budget and what it shed (its own ``/metrics``), the
survivors' CPU per resume, and every delivery of the publishes before, during and after. Side by
side, unless ``--no-side-by-side``: the ordinary storm (``bench.scenarios.reconnect_storm``) of the
same count of sockets, all on one node, on the same machine in the same repeat, and the ratio of
the two times (the absolute target depends on the machine: docs/benchmarks.md).

    python -m bench.node_loss [--weddings 30] [--repeats 2] [--fill 0.87]

Needs PostgreSQL and Redis as ``python -m bench`` does (its scratch database and Redis database).
Writes ``var/bench-node-loss.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from typing import Any

from bench import report, scenarios, servers
from bench.loadgen import LoadGenerator
from bench.resume import node_order
from bench.scenarios import SETTLE_SECONDS, STORM_DEADLINE, Session, specs_for

NODES = 3
STORM_TARGET_SECONDS = 10.0  # PRODUCT.md's reconnect storm: all resumed within 10 s
LAG_BOUND_SECONDS = "0.5"  # the product's default REALTIME_SHED_LOOP_LAG_SECONDS
ONE_NODE_FIGURES = (
    "dropped",
    "resumed",
    "all_resumed_seconds",
    "resumed_p50_seconds",
    "server_cpu_ms_per_resume",
    "lost",
    "duplicates",
)


def node_loss(
    env: dict[str, str], weddings: list[dict[str, Any]], *, fill: float, rate: float, before: float, after: float
) -> dict[str, Any]:
    """One run: start the nodes, connect, kill the first node under traffic, count what arrived."""
    specs = specs_for(weddings)
    budget = math.ceil(len(specs) / (NODES - 1) / fill)
    node_env = {**env, "REALTIME_SOCKET_BUDGET": str(budget), "REALTIME_SHED_LOOP_LAG_SECONDS": LAG_BOUND_SECONDS}
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(servers.running("product", node_env, name=f"node-loss-{n}", fresh=n == 0))
            for n in range(NODES)
        ]
        urls = [node.url for node in nodes]
        publishers = LoadGenerator(urls[1:], [s for s in specs if s.publisher], workers=1)
        stack.callback(publishers.close)
        receivers = LoadGenerator(urls, [s for s in specs if not s.publisher], workers=2)
        stack.callback(receivers.close)
        started = time.perf_counter()
        first = publishers.connect(concurrency=50)
        rest = receivers.connect(concurrency=50)
        connect_seconds = time.perf_counter() - started
        # Session's collect counts what both generators got against what was stored.
        live = Session(nodes[1], publishers, receivers, servers.redis_pid(env), {})
        time.sleep(SETTLE_SECONDS)
        live.reset()
        published: dict[str, list[int]] = {}
        errors: list[str] = []

        def publish() -> None:
            try:
                published.update(publishers.publish(rate=rate, seconds=before + after + 10))
            except Exception as error:  # reported with the figures: nothing expected is not "nothing lost"
                errors.append(repr(error))

        publisher = threading.Thread(target=publish, name="node-loss-publisher")
        publisher.start()
        time.sleep(before)
        survivors = nodes[1:]
        cpu_start = sum(servers.process_cpu_seconds(node.pid) for node in survivors)
        wall_start = time.perf_counter()
        os.kill(nodes[0].pid, signal.SIGKILL)
        storm = receivers.lose_node(node=0, deadline=STORM_DEADLINE)
        storm_wall = time.perf_counter() - wall_start
        storm_cpu = sum(servers.process_cpu_seconds(node.pid) for node in survivors) - cpu_start
        publisher.join(timeout=before + after + 10 + 120)
        figures = live.collect(published, timeout=20)
        figures.pop("last_receipt")
        sheds: dict[str, int] = {}
        for node in survivors:
            for sample in servers.product_samples(node, node_env, "wedsync_sockets_shed_total"):
                key = f"{sample.labels['tier']}/{sample.labels['cause']}"
                sheds[key] = sheds.get(key, 0) + int(sample.value)
        # The planners sit on the survivors, each on the first node of its order among them.
        held = {
            str(n): storm["nodes"].get(str(n), 0)
            + sum(1 for s in specs if s.publisher and node_order(s.member, NODES - 1)[0] + 1 == n)
            for n in range(1, NODES)
        }
        return {
            "sockets": len(specs),
            "connected": first["connected"] + rest["connected"],
            "connect_failed": first["failed"] + rest["failed"],
            "connect_seconds": round(connect_seconds, 1),
            "budget": budget,
            "publisher_error": errors[0] if errors else None,
            **scenarios.resume_figures(storm),
            "all_noticed_seconds": round(storm["noticed_seconds"], 2) if storm["noticed_seconds"] is not None else None,
            "survivor_sockets": held,
            "survivor_fill": {n: round(count / budget, 3) for n, count in held.items()},
            "shed": sheds,
            "survivors_cpu_cores": round(storm_cpu / storm_wall, 2),
            "survivors_cpu_ms_per_resume": (
                round(storm_cpu * 1000 / storm["connected"], 2) if storm["connected"] else None
            ),
            **figures,
        }


def verdict(run: dict[str, Any]) -> str:
    met = (
        run["resume_failed"] == 0
        and run["all_resumed_seconds"] is not None
        and run["all_resumed_seconds"] <= STORM_TARGET_SECONDS
        and run["lost"] == 0
        and run["duplicates"] == 0
        and not run["publisher_error"]
    )
    return "met" if met else "missed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weddings", type=int, default=30, help="weddings of 200 members (30: 2,000 per node)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fill", type=float, default=0.87, help="the survivors' sockets over their budget, after")
    parser.add_argument("--rate", type=float, default=1.0, help="publishes per planner per second")
    parser.add_argument(
        "--no-side-by-side",
        dest="side_by_side",
        action="store_false",
        help="skip the storm of the same count of sockets on one node after each run",
    )
    args = parser.parse_args()
    if not 1 <= args.repeats <= 5 or not 0.1 <= args.fill <= 1.5:
        parser.error("--repeats: 1 to 5; --fill: 0.1 to 1.5")
    env = servers.environment()
    results: dict[str, Any] = {"machine": report.machine(), "args": vars(args), "runs": []}
    try:
        for repeat in range(args.repeats):
            weddings = servers.seed(env, weddings=args.weddings, members=200)
            print(f"node loss [{repeat + 1}/{args.repeats}]", file=sys.stderr, flush=True)
            run = node_loss(env, weddings, fill=args.fill, rate=args.rate, before=3, after=3)
            run["verdict"] = verdict(run)
            if args.side_by_side:
                # The same count of sockets resuming, all on one node (scenarios.reconnect_storm).
                storm = scenarios.reconnect_storm(
                    "product",
                    env,
                    weddings[: max(len(weddings) // NODES, 1)],
                    rate=args.rate,
                    before=3,
                    after=3,
                    workers=2,
                )
                run["one_node_storm"] = {key: storm[key] for key in ONE_NODE_FIGURES}
                if not run["resume_failed"] and not storm["resume_failed"]:  # both times of every socket back
                    run["resumed_seconds_ratio_to_one_node"] = round(
                        run["all_resumed_seconds"] / storm["all_resumed_seconds"], 3
                    )
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    finally:
        servers.drop_scratch_database()
    out = servers.ROOT / "var" / "bench-node-loss.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
