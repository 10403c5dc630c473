"""`make cluster`: WedSync laid out as docs/deployment.md deploys it, on this machine: a database of
its own on the local PostgreSQL, a Redis master with a replica and three sentinels, two daphne
nodes and a Celery worker with beat reaching Redis through the sentinels, and nginx in front with
deploy/nginx/wedsync.conf. Everything listens on 127.0.0.1; Ctrl-C (or SIGTERM) stops all of it,
each process by its PID.

    bin/cluster.py [--port 8100] [--database-url postgres://postgres@127.0.0.1:5432/wedsync_cluster] [--check]

With --check it proves the layout and stops: a planner's and a couple's sockets through nginx
land on the two nodes; an event goes from one to the other; the Redis master is killed; after the
failover another event does too; exit 0 when all of that held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from realtime.client import RealtimeClient  # noqa: E402
from tests.balancers import nginx_config  # noqa: E402
from tests.realtime.nodes import Node  # noqa: E402
from tests.servers import (  # noqa: E402
    celery_worker_with_beat,
    free_port,
    listening_process,
    redis_sentinel_group,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/wedsync_cluster"


def say(line: str) -> None:
    print(f"cluster: {line}", flush=True)


def _admin_and_name(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql", path="/postgres")), parts.path.lstrip("/")


def drop_database(url: str) -> None:
    admin, name = _admin_and_name(url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_database(url: str, *, keep: bool) -> None:
    """Create the cluster's database (from scratch unless ``keep`` and it exists)."""
    admin, name = _admin_and_name(url)
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and keep:
            return
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def manage(env: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", *arguments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise SystemExit(f"cluster: manage.py {' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


@contextlib.contextmanager
def nginx(*, port: int, node_ports: list[int], var_dir: Path) -> Iterator[None]:
    binary = shutil.which("nginx")
    if binary is None:
        raise SystemExit("cluster: nginx is not installed (Debian's nginx package)")
    config = var_dir / "nginx.conf"
    config.write_text(nginx_config(port=port, node_ports=node_ports, var_dir=var_dir))
    options = ["-e", str(var_dir / "nginx-early.log"), "-c", str(config)]
    subprocess.run([binary, "-t", "-q", *options], check=True)  # noqa: S603
    with listening_process([binary, *options], port=port, log=var_dir / "nginx.log"):
        yield


def worker_answers(env: dict[str, str], *, within: float) -> None:
    """The Celery worker answers a ping sent through the broker (so through the sentinels)."""
    deadline = time.monotonic() + within
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "wedsync", "inspect", "ping", "--timeout", "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode == 0 and "pong" in done.stdout:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster: the worker did not answer a ping within {within:.0f} s:\n{done.stderr[-2000:]}")
        time.sleep(1)


async def check(*, port: int, wedding: dict[str, object], fail_over: Callable[[], None]) -> None:
    members = {member["role"]: member for member in wedding["members"]}  # type: ignore[attr-defined]
    url = f"ws://localhost:{port}/ws/v1/"
    topic = f"wedding:{wedding['id']}"
    planner = RealtimeClient(url, token=members["planner"]["token"])
    couple = RealtimeClient(url, token=members["couple"]["token"])
    try:
        for client in (planner, couple):
            await client.start()
            await client.subscribe(topic)
        nodes = {client.welcome["node"] for client in (planner, couple) if client.welcome}
        if nodes != {"n1", "n2"}:  # nginx's round robin sends the second socket to the other node
            raise SystemExit(f"cluster: check failed: the two sockets reached {sorted(nodes)}, not n1 and n2")
        say(f"the planner and the couple came through nginx to {', '.join(sorted(nodes))}")
        for text in ("before", "after"):
            if text == "after":
                await asyncio.to_thread(fail_over)
            sent = await planner.publish(topic, "chat.message", {"text": f"{text} the failover"})
            async with asyncio.timeout(30):
                while True:
                    event = await couple.next_event()
                    if event.get("seq") == sent["seq"]:
                        break
            say(f"an event {text} the failover reached the couple (seq {sent['seq']})")
    finally:
        await planner.close()
        await couple.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--database-url", default=os.environ.get("CLUSTER_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--check", action="store_true", help="prove the layout, stop, exit 0 when it held")
    options = parser.parse_args()
    for binary in ("nginx", "redis-server", "redis-sentinel"):
        if shutil.which(binary) is None:
            raise SystemExit(f"cluster: {binary} is not installed (apt-get install nginx redis-sentinel)")
    var_dir = Path(tempfile.mkdtemp(prefix="wedsync-cluster-"))
    fresh_database(options.database_url, keep=not options.check)
    signal.signal(signal.SIGTERM, _stop_asked)  # as Ctrl-C: every block below stops what it started
    try:
        run(options, var_dir)
    finally:
        if options.check:  # a proof leaves nothing behind; a rehearsal keeps its database and logs
            drop_database(options.database_url)
            shutil.rmtree(var_dir, ignore_errors=True)


def _stop_asked(*_: object) -> None:
    raise KeyboardInterrupt


def run(options: argparse.Namespace, var_dir: Path) -> None:
    with redis_sentinel_group(var_dir) as redis:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108
            "DJANGO_SETTINGS_MODULE": "wedsync.settings",
            "DATABASE_URL": options.database_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis.master.port}/0",
            "REDIS_SENTINELS": redis.sentinels,
            "REDIS_SENTINEL_MASTER": redis.master_name,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "ALLOWED_HOSTS": "localhost,127.0.0.1",
            "SECURE_SSL_REDIRECT": "0",
            "TRUSTED_PROXIES": "1",
            "WEDSYNC_VAR_DIR": str(var_dir / "var"),
        }
        manage(env, "migrate", "-v0")
        manage(env, "collectstatic", "--noinput", "-v0")
        seeded = json.loads(manage(env, "seed_demo", "--json", "--if-empty", "--weddings", "1"))["weddings"]
        nodes = [Node(name=f"n{i}", port=free_port(), log_path=var_dir / f"n{i}.log") for i in (1, 2)]
        try:
            for node in nodes:
                node.start(env)
            with (
                celery_worker_with_beat(env, var_dir),
                nginx(port=options.port, node_ports=[node.port for node in nodes], var_dir=var_dir),
            ):
                say(f"up: http://localhost:{options.port}/ (nodes n1, n2; logs in {var_dir})")
                if options.check:
                    if not seeded:
                        raise SystemExit("cluster: --check needs a fresh database")

                    def fail_over() -> None:
                        if redis.master.process is not None:
                            redis.master.process.send_signal(signal.SIGKILL)
                        say("the Redis master is killed")
                        deadline = time.monotonic() + 60
                        while redis.master_port() != redis.replica.port:
                            if time.monotonic() > deadline:
                                raise SystemExit("cluster: check failed: the sentinels promoted no replica in 60 s")
                            time.sleep(0.2)
                        say("the sentinels promoted its replica")

                    worker_answers(env, within=60)
                    say("the worker answered a ping through the broker")
                    asyncio.run(check(port=options.port, wedding=seeded[0], fail_over=fail_over))
                    worker_answers(env, within=60)
                    say("the worker answered a ping through the broker after the failover")
                    say("check: ok")
                else:
                    say("demo users' password: wedsync-demo-2026 (demo1-planner, demo1-couple1, ...); Ctrl-C stops")
                    with contextlib.suppress(KeyboardInterrupt):
                        while True:
                            time.sleep(0.5)
        finally:
            for node in nodes:
                node.stop()
            say("stopped")


if __name__ == "__main__":
    main()
