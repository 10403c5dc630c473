"""The servers under test, their data and their resource readings.

- product: ``python -m daphne wedsync.asgi:application`` (or uvicorn, for the operators' comparison),
  against the scratch PostgreSQL database ``wedsync_bench`` and its own Redis database;
- ceiling: ``bench/ceiling.py``, a pure-asyncio broadcaster doing the same fan-out;
- baseline: ``bench/baseline.py``, the textbook Channels consumer under daphne on the same Redis.

Everything binds to 127.0.0.1 and is stopped by the PID this module started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = os.environ.get("BENCH_DB", "wedsync_bench")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "3"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

COMMANDS = {
    "product": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "wedsync.asgi:application"],
    # The product on channels-redis's core layer instead of Pub/Sub, for decision 0014's comparison.
    "product-core": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "wedsync.asgi:application"],
    "product-uvicorn": [
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        "--ws-max-size",
        "65536",
        "wedsync.asgi:application",
    ],
    "ceiling": ["-m", "bench.ceiling", "--port", "{port}"],
    "baseline": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "bench.baseline:application"],
}
# The textbook consumer on the layer Channels' documentation sets up (and the issue's first look
# measured): core. The product runs on its own default, pubsub (decision 0014).
EXTRA_ENVIRONMENT = {"baseline": {"REALTIME_CHANNEL_LAYER": "core"}, "product-core": {"REALTIME_CHANNEL_LAYER": "core"}}


def environment() -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
        "DJANGO_SETTINGS_MODULE": "wedsync.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        # The publishers are planners publishing far above a person's rate: lift only their limit.
        "REALTIME_RATE_LIMITS": '{"planner": 1000000}',
        # Every simulated phone connects from 127.0.0.1: one address, thousands of sockets.
        "REALTIME_ADDRESS_HANDSHAKES": "0",
        "REALTIME_ADDRESS_CONNECTIONS": "0",
        # The bench measures what a node carries, not load shedding (bench.shed_cost measures that).
        "REALTIME_SOCKET_BUDGET": "0",
        "REALTIME_SHED_LOOP_LAG_SECONDS": "0",
        # The product's /metrics, read after a scenario (member_cache_figures).
        "METRICS_TOKEN": secrets.token_urlsafe(40),
    }


def seed(
    env: dict[str, str], *, weddings: int, members: int, editors: int = 0, timeline_items: int | None = None
) -> list[dict[str, Any]]:
    """A fresh scratch database with ``weddings`` weddings of ``members`` members, with tokens;
    ``editors`` of the members are vendor assistants (who may change the timeline), and each
    wedding's timeline has ``timeline_items`` items (the demo's five by default)."""
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)  # noqa: S603
    seeded = subprocess.run(  # noqa: S603
        [
            python,
            "manage.py",
            "seed_demo",
            "--json",
            "--weddings",
            str(weddings),
            "--guests",
            str(max(members - 10 - editors, 1)),  # the demo staff are 10 members per wedding
            "--editors",
            str(editors),
            *([] if timeline_items is None else ["--timeline-items", str(timeline_items)]),
            "--token-ttl",
            "7200",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seeded_weddings: list[dict[str, Any]] = json.loads(seeded.stdout)["weddings"]
    return seeded_weddings


def drop_scratch_database() -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def process_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def redis_pid(env: dict[str, str]) -> int:
    info: dict[str, Any] = redis.Redis.from_url(env["REDIS_URL"]).info("server")
    return int(info["process_id"])


@dataclass
class RunningServer:
    kind: str
    url: str
    pid: int
    port: int


@contextmanager
def running(kind: str, env: dict[str, str], *, name: str | None = None, fresh: bool = True) -> Iterator[RunningServer]:
    """Start a server of ``kind``, logging to ``var/bench-<name>.log``; ``fresh``: empty the
    bench's Redis database first (not for the second node of several sharing it)."""
    port = _free_port()
    log = ROOT / "var" / f"bench-{name or kind}.log"
    log.parent.mkdir(exist_ok=True)
    if fresh:  # the bench's own database: no state from the last server
        redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    command = [sys.executable, *(part.format(port=port) for part in COMMANDS[kind])]
    with log.open("wb") as out:
        server = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env={**env, **EXTRA_ENVIRONMENT.get(kind, {})}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(kind, port, server, log=log)
        yield RunningServer(kind=kind, url=f"ws://127.0.0.1:{port}/ws/v1/", pid=server.pid, port=port)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_ready(kind: str, port: int, server: subprocess.Popen[bytes], *, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the {kind} server exited with {server.returncode}; see {log}")
        try:
            if kind.startswith("product"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            else:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the {kind} server did not start within 30 s")


def member_cache_figures(server: RunningServer, env: dict[str, str]) -> dict[str, Any]:
    """The product node's membership cache since it started (realtime.member_cache), from its own
    /metrics: lookups answered from the cache and read from PostgreSQL. Empty for the others."""
    if not server.kind.startswith("product"):
        return {}
    lookups = {"hit": 0.0, "miss": 0.0}
    for sample in product_samples(server, env, "wedsync_member_cache_lookups_total"):
        lookups[sample.labels["outcome"]] += sample.value
    total = lookups["hit"] + lookups["miss"]
    return {
        "member_cache_hits": int(lookups["hit"]),
        "member_cache_misses": int(lookups["miss"]),
        "member_cache_hit_ratio": round(lookups["hit"] / total, 4) if total else None,
    }


def product_samples(server: RunningServer, env: dict[str, str], name: str) -> list[Sample]:
    """The samples named ``name`` in a product node's own /metrics."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics", headers={"Authorization": f"Bearer {env['METRICS_TOKEN']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    families = text_string_to_metric_families(text)
    return [sample for family in families for sample in family.samples if sample.name == name]
