"""Real server processes for tests that need more than one node: daphne, started and stopped by PID.

Each node is ``python -m daphne wedsync.asgi:application`` on 127.0.0.1 with the production
settings, the test database and a Redis of the test's own (so a test may restart it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from realtime.conformance import CONFORMANCE_ECHO_PATH
from tests.servers import RedisServer, free_port, redis_server, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    daphne_options: tuple[str, ...] = ()  # e.g. ("--ping-interval", "1")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/"

    @property
    def echo_url(self) -> str:
        """The test-only echo route (realtime/conformance.py) of a node started by :func:`echo_node`."""
        return f"ws://127.0.0.1:{self.port}/{CONFORMANCE_ECHO_PATH}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    *self.daphne_options,
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "wedsync.asgi:application",
                ],
                cwd=ROOT,
                env={**env, "REALTIME_NODE_NAME": self.name},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until_healthy(self.port, self.process, within=30, log=self.log)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


def node_environment(*, redis_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    db = connection.settings_dict
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "wedsync.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,  # the tests' tokens must verify on the nodes
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "INFO",
        # A late loop on a loaded machine sheds nobody: load shedding has tests of its own.
        "REALTIME_SHED_LOOP_LAG_SECONDS": "0",
        # Bursts of hundreds of events from one member: the limits have tests of their own.
        "REALTIME_RATE_LIMITS": '{"planner": 100000, "couple": 100000}',
        # Every test client comes from 127.0.0.1: the address caps, too, have tests of their own.
        "REALTIME_ADDRESS_HANDSHAKES": "0",
        "REALTIME_ADDRESS_CONNECTIONS": "0",
        **(extra or {}),
    }


@dataclass
class Cluster:
    nodes: list[Node]
    redis: RedisServer
    environment: dict[str, str]  # what the nodes run with (a worker started beside them takes it too)


@contextmanager
def cluster(
    tmp_path: Path, *, count: int = 2, extra_env: dict[str, str] | None = None, daphne_options: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    """``count`` daphne nodes on one private Redis; everything is stopped afterwards."""
    with redis_server() as redis:
        env = node_environment(redis_url=redis.url, extra=extra_env)
        nodes = [
            Node(name=f"n{i + 1}", port=free_port(), log_path=tmp_path / f"n{i + 1}.log", daphne_options=daphne_options)
            for i in range(count)
        ]
        try:
            for node in nodes:
                node.start(env)
            yield Cluster(nodes=nodes, redis=redis, environment=env)
        finally:
            for node in nodes:
                node.stop()


def echo_node_environment(*, var_dir: Path, max_frame: int) -> dict[str, str]:
    """A node serving the test-only echo route: embedded (no database, no Redis: the echo needs
    neither) with DEBUG, as the echo requires; the socket stack is the product's own."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "wedsync.settings",
        "DEBUG": "1",
        "WEDSYNC_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
        "REALTIME_CONFORMANCE_ECHO": "1",
        "REALTIME_MAX_FRAME": str(max_frame),
    }


@contextmanager
def echo_node(tmp_path: Path, *, max_frame: int = 64 * 1024) -> Iterator[Node]:
    """One daphne node with the product's socket stack and the echo route, stopped afterwards.

    daphne's own limits (1 MiB unless given) are raised to ``max_frame`` too: the product's factory
    takes the smaller of daphne's and ``REALTIME_MAX_FRAME``.
    """
    limits = ("--websocket-max-message-size", str(max_frame), "--websocket-max-frame-size", str(max_frame))
    var_dir = tmp_path / "echo-var"
    var_dir.mkdir(exist_ok=True)
    node = Node(name="echo", port=free_port(), log_path=tmp_path / "echo.log", daphne_options=limits)
    try:
        node.start(echo_node_environment(var_dir=var_dir, max_frame=max_frame))
        yield node
    finally:
        node.stop()
