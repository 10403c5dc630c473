"""A room benchmark: one wedding, N members subscribed, one publisher at a fixed rate, run
against the product and, side by side, the ceiling and the textbook baseline.

Starts each server on 127.0.0.1 in turn (the product and the baseline under daphne against a
scratch PostgreSQL database and a Redis database of their own; the ceiling as a pure-asyncio
process), connects every member's socket, publishes chat messages that carry their send time, and
reports what the receivers saw: deliveries/s, latency percentiles, losses and duplicates (counted
per expected delivery, never assumed), and the product's ratios to the other two. Bounded in time
and count.

    .venv/bin/python -m bench.room --members 200 --rate 50 --seconds 15 --servers product,ceiling,baseline
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import websockets
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "wedsync_bench"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(redis_db: int) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "DJANGO_SETTINGS_MODULE": "wedsync.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        "REALTIME_RATE_LIMITS": '{"planner": 1000000}',
        "REALTIME_DEVICE_LIMITS": '{"guest": 10}',
    }


def _prepare(env: dict[str, str], members: int) -> dict[str, Any]:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)  # noqa: S603
    seeded = subprocess.run(  # noqa: S603
        [python, "manage.py", "seed_demo", "--json", "--guests", str(max(members - 10, 1)), "--token-ttl", "3600"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wedding: dict[str, Any] = json.loads(seeded.stdout)["weddings"][0]
    return wedding


SERVERS = {
    "product": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "wedsync.asgi:application"],
    "ceiling": ["-m", "bench.ceiling", "--port", "{port}"],
    "baseline": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "bench.baseline:application"],
}


def _start_server(kind: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, *(part.format(port=port) for part in SERVERS[kind])]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    if kind != "product":  # no /healthz there: wait for the port instead
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return server
            except OSError:
                time.sleep(0.1)
        server.kill()
        raise RuntimeError(f"the {kind} server did not start")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("daphne did not start")


def _rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _run(url: str, wedding: dict[str, Any], rate: float, seconds: float, server_pid: int) -> dict[str, Any]:
    topic = f"wedding:{wedding['id']}"
    members = wedding["members"]
    received: dict[int, list[tuple[int, float]]] = {m["member"]: [] for m in members}
    sockets = []

    async def open_socket(member: dict[str, Any]) -> websockets.ClientConnection:
        ws = await websockets.connect(
            url,
            subprotocols=[Subprotocol("wedsync.v1"), Subprotocol(f"bearer.{member['token']}")],
            max_size=None,
            ping_interval=None,
        )
        welcome = json.loads(await ws.recv())
        await ws.send(json.dumps({"op": "subscribe", "ref": "s", "topic": topic, "since": None}))
        reply = json.loads(await ws.recv())
        if welcome.get("op") != "welcome" or reply.get("status") != "ok":
            raise RuntimeError(f"member {member['member']} could not subscribe: {welcome} {reply}")
        return ws

    await asyncio.sleep(0.5)
    rss_before = _rss_kib(server_pid)
    connect_started = time.perf_counter()
    for start in range(0, len(members), 50):
        sockets += await asyncio.gather(*(open_socket(m) for m in members[start : start + 50]))
    connect_seconds = time.perf_counter() - connect_started
    await asyncio.sleep(1.0)  # let the server settle before reading its memory
    rss_per_socket = (_rss_kib(server_pid) - rss_before) * 1024 / len(sockets)

    closes: dict[int, int | None] = {}

    async def reader(member_id: int, ws: websockets.ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("op") == "event":
                    sent_at = float(frame["data"]["text"].split()[1])
                    received[member_id].append((frame["seq"], time.time() - sent_at))
        except websockets.ConnectionClosed:
            pass
        closes[member_id] = ws.close_code

    readers = [asyncio.create_task(reader(m["member"], ws)) for m, ws in zip(members, sockets, strict=True)]
    publisher = next(ws for m, ws in zip(members, sockets, strict=True) if m["role"] == "planner")
    published = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        published += 1
        await publisher.send(
            json.dumps(
                {
                    "op": "publish",
                    "ref": f"p{published}",
                    "topic": topic,
                    "type": "chat.message",
                    "data": {"text": f"sent {time.time():.6f}"},
                }
            )
        )
        next_at = started + published / rate
        await asyncio.sleep(max(next_at - time.perf_counter(), 0))
    publish_seconds = time.perf_counter() - started
    expected = published * len(members)
    tail_deadline = time.perf_counter() + 20  # let the backlog arrive; what has not by then is lost
    while time.perf_counter() < tail_deadline and sum(len(e) for e in received.values()) < expected:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()

    latencies = sorted(lat for events in received.values() for _seq, lat in events)
    delivered = sum(len({seq for seq, _ in events}) for events in received.values())
    duplicates = sum(len(events) - len({seq for seq, _ in events}) for events in received.values())
    return {
        "members": len(members),
        "published": published,
        "publish_rate": round(published / seconds, 1),
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicates": duplicates,
        "deliveries_per_s": round(delivered / elapsed, 1),
        "publish_seconds": round(publish_seconds, 1),
        "drain_seconds": round(elapsed - publish_seconds, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1) if latencies else None,
        "connect_seconds": round(connect_seconds, 2),
        # Authenticated and subscribed sockets per second (50 connecting at a time).
        "connects_per_s": round(len(sockets) / connect_seconds, 1),
        # Server memory added per authenticated, subscribed, idle socket.
        "rss_kb_per_socket": round(rss_per_socket / 1000, 1),
        # Sockets the server cut off as too slow (this generator does not resume them).
        "closed_4008": sum(1 for code in closes.values() if code == 4008),
    }


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The product's figures over the ceiling's and the baseline's (a noisy machine cancels out)."""
    product = results.get("product")
    ratios: dict[str, float | None] = {}
    if product is None:
        return ratios
    for other in ("ceiling", "baseline"):
        theirs = results.get(other)
        if theirs is None:
            continue
        for metric in ("deliveries_per_s", "latency_ms_p99"):
            ratios[f"{metric}_product_over_{other}"] = (
                round(product[metric] / theirs[metric], 2) if theirs[metric] and product[metric] else None
            )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="publishes per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--servers", default="product", help="comma-separated: product, ceiling, baseline")
    parser.add_argument("--redis-db", type=int, default=3)
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.servers.split(",") if kind.strip()]
    if not (1 <= args.seconds <= 300 and 1 <= args.members <= 2000 and 0 < args.rate <= 1000):
        parser.error("bounded runs only: 1-300 s, 1-2000 members, rate up to 1000/s")
    if unknown := set(kinds) - set(SERVERS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    env = _environment(args.redis_db)
    wedding = _prepare(env, args.members)
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        port = _free_port()
        log = ROOT / "var" / f"bench-room-{kind}.log"
        log.parent.mkdir(exist_ok=True)
        server = _start_server(kind, env, port, log)
        try:
            results[kind] = asyncio.run(
                _run(f"ws://127.0.0.1:{port}/ws/v1/", wedding, args.rate, args.seconds, server.pid)
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
    print(json.dumps({"results": results, "ratios": _ratios(results)}, indent=2))


if __name__ == "__main__":
    main()
