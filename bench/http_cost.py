"""The server's CPU per API publish on a node with no sockets: a profiling aid for the HTTP path
(decision 0033), not a scenario. ``http_publish`` (bench.scenarios) is what the issue's target is
judged by; this isolates the per-request cost that scenario's HTTP variant pays on top of the fan-out.

``python -m bench.http_cost [--requests N] [--connections C]`` seeds the bench database (4 weddings
of 20), starts the product node, sends N publishes as the weddings' planners over C keep-alive
connections, and prints the node's CPU (user and system) per request and the rate it answered at.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from bench import servers
from bench.scenarios import HTTP_PUBLISH_ENVIRONMENT

WARM_UP = 20  # requests before measuring: the first ones set up lazily what later ones reuse
# Four weddings' planners publishing as fast as they are answered; the socket limits are not what is measured.
ENVIRONMENT = {**HTTP_PUBLISH_ENVIRONMENT, "REALTIME_RATE_LIMITS": '{"planner": 1000000}'}


def _publish(*, port: int, wedding: int, token: str, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(count):
            connection.request(
                "POST",
                f"/api/v1/weddings/{wedding}/events/",
                json.dumps({"type": "chat.message", "data": {"text": "The cake has arrived"}}),
                {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            )
            answer = connection.getresponse()
            answer.read()
            if answer.status != 201:
                raise RuntimeError(f"a publish was answered {answer.status}")
    finally:
        connection.close()


def measure(*, requests: int, connections: int) -> dict[str, Any]:
    env = {**servers.environment(), **ENVIRONMENT}
    weddings = servers.seed(env, weddings=4, members=20)
    planners = [
        (wedding["id"], next(m["token"] for m in wedding["members"] if m["role"] == "planner")) for wedding in weddings
    ]
    with servers.running("product", env) as server:
        port = urlsplit(server.url).port or 0
        _publish(port=port, wedding=planners[0][0], token=planners[0][1], count=WARM_UP)
        before = servers.process_cpu_seconds(server.pid)
        started = time.perf_counter()
        senders = [
            threading.Thread(
                target=_publish,
                kwargs={
                    "port": port,
                    "wedding": planners[i % len(planners)][0],
                    "token": planners[i % len(planners)][1],
                    "count": requests // connections,
                },
            )
            for i in range(connections)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        seconds = time.perf_counter() - started
        used = servers.process_cpu_seconds(server.pid) - before
    sent = requests // connections * connections
    return {
        "requests": sent,
        "answered_per_s": round(sent / seconds, 1),
        "server_cpu_ms_per_request": round(used / sent * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(measure(requests=args.requests, connections=args.connections)))


if __name__ == "__main__":
    main()
