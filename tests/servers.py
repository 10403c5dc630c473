"""Real servers a test starts and stops itself (bound to 127.0.0.1, stopped by PID)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_healthy(port: int, process: subprocess.Popen[bytes], *, within: float, log: Callable[[], str]) -> None:
    """Until the server on ``port`` answers /healthz with 200; RuntimeError with its log's tail if
    its process ends first or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        try:
            # By name, as a browser would ask: a node may serve "localhost" and not its bare address.
            probe = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Host": "localhost"})
            with urllib.request.urlopen(probe, timeout=1) as response:  # noqa: S310  (loopback)
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server on port {port} did not come up:\n{log()[-3000:]}")
        time.sleep(0.1)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes] | None = None
    replica_of: int | None = None  # a replica of the server on this port
    data_dir: Path | None = None  # where it may write (a replica saves the master's snapshot there)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="wedsync-redis-"))
        self.process = subprocess.Popen(
            [
                binary,
                "--dir",
                str(self.data_dir),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def remove(self) -> None:
        """Stop it for good, and remove what it wrote."""
        self.stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port, stopped (by its PID) when the block ends."""
    server = RedisServer(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.remove()


@dataclass
class SentinelGroup:
    """A Redis master, its replica and three sentinels watching them as ``master_name``, all on
    loopback ports of their own: what REDIS_SENTINELS names in production."""

    master: RedisServer
    replica: RedisServer
    sentinel_ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    master_name: str = "wedsync"

    @property
    def sentinels(self) -> str:
        """The REDIS_SENTINELS value."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def master_port(self) -> int:
        """The port the first sentinel names as master now."""
        client = redis.Redis(host="127.0.0.1", port=self.sentinel_ports[0], socket_timeout=2)
        try:
            address: Any = client.sentinel_get_master_addr_by_name(self.master_name)
            return int(address[1])
        finally:
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        for server in (self.master, self.replica):
            server.remove()


@contextmanager
def redis_sentinel_group(directory: Path) -> Iterator[SentinelGroup]:
    """Start the group (the sentinels see the replica before this returns); stop everything (by PID) after."""
    binary = shutil.which("redis-sentinel")
    if binary is None:
        raise RuntimeError("redis-sentinel is not installed (Debian's redis-sentinel package)")
    master = RedisServer(port=free_port())
    replica = RedisServer(port=free_port(), replica_of=master.port)
    group = SentinelGroup(master=master, replica=replica, sentinel_ports=[], processes=[])
    try:
        master.start()
        replica.start()
        _until(lambda: _replica_linked(replica.port), within=30, what="the replica's first sync with the master")
        for index in range(3):
            port = free_port()
            config = directory / f"sentinel-{index}.conf"  # sentinels rewrite their config: one each
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\nsentinel resolve-hostnames no\n"
                f"sentinel monitor {group.master_name} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {group.master_name} 1000\n"
                f"sentinel failover-timeout {group.master_name} 5000\n"
                f"sentinel parallel-syncs {group.master_name} 1\n"
            )
            with (directory / f"sentinel-{index}.log").open("wb") as log:
                group.processes.append(subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT))
            group.sentinel_ports.append(port)
        # Every sentinel knows the replica and the other sentinels, so that a failover can be voted
        # (they poll the master every 10 s, announce themselves every 2 s).
        _until(
            lambda: all(_sentinel_sees_all(port, group.master_name) for port in group.sentinel_ports),
            within=60,
            what="the sentinels finding the replica and each other",
        )
        yield group
    finally:
        group.stop()


def _until(condition: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {within:.0f} s: {what}")
        time.sleep(0.2)


def _replica_linked(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        info: Any = client.info("replication")
        return bool(info.get("master_link_status") == "up")
    finally:
        client.close()


def _sentinel_sees_all(port: int, master_name: str) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        master: Any = client.sentinel_master(master_name)
        return int(master.get("num-slaves", 0)) >= 1 and int(master.get("num-other-sentinels", 0)) >= 2
    finally:
        client.close()


def postgres_binaries() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest installed), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return found[-1].parent if found else None


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of a test's own (trust auth, loopback only), started and stopped with
    pg_ctl; as the ``postgres`` user when the tests run as root (initdb refuses root)."""

    binaries: Path
    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/wedsync"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")

    def create(self) -> None:
        self.directory.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.directory, user="postgres", group="postgres")
        self._run(
            str(self.binaries / "initdb"), "-D", str(self.directory), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()
        self._run(str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "wedsync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory} -c fsync=off"
        )
        log = str(self.directory / "server.log")
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.directory), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are ended, as in a restart or a failover."""
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.directory), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.directory / "postmaster.pid").exists()


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on a free port with an empty ``wedsync`` database, stopped
    (pg_ctl, its own postmaster only) and removed when the block ends. Its files go in the system's
    temporary directory: pytest's own is closed to the ``postgres`` user."""
    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin)")
    directory = Path(tempfile.mkdtemp(prefix="wedsync-pg-"))
    directory.rmdir()  # initdb wants to make it, with the owner and mode it checks
    server = PostgresServer(binaries=binaries, directory=directory, port=free_port())
    try:
        server.create()
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def celery_worker_with_beat(env: dict[str, str], var_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker running beat (solo pool) with ``env``, stopped by its PID afterwards."""
    log_path = var_dir / "worker.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "wedsync", "worker", "--beat", "--pool=solo",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
                "--schedule", str(var_dir / "beat-schedule"),
            ],
            cwd=Path(__file__).resolve().parents[1],
            env={**env, "WEDSYNC_VAR_DIR": str(var_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.returncode not in (0, -15):
            print(log_path.read_text(errors="replace")[-5000:])  # for the failure report


@contextmanager
def haproxy_in_front(ports: list[int], var_dir: Path) -> Iterator[int]:
    """A real haproxy on a free port before the nodes on ``ports``: everything goes to the first
    node while its /healthz answers (checked every 300 ms), then to the next. Stopped by its PID."""
    binary = shutil.which("haproxy")
    if binary is None:
        raise RuntimeError("haproxy is not installed")
    port = free_port()
    servers = "\n".join(
        f"    server n{i + 1} 127.0.0.1:{node_port} check inter 300 fall 1 rise 2" for i, node_port in enumerate(ports)
    )
    config = var_dir / "haproxy.cfg"
    config.write_text(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1h\n    timeout server 1h\n"
        "    timeout tunnel 1h\n    retries 3\n    option redispatch\n"
        f"frontend web\n    bind 127.0.0.1:{port}\n    default_backend nodes\n"
        f"backend nodes\n    balance first\n    option httpchk GET /healthz\n{servers}\n"
    )
    with listening_process([binary, "-db", "-f", str(config)], port=port, log=var_dir / "haproxy.log"):
        yield port


@contextmanager
def listening_process(command: list[str], *, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` (a balancer, say) started, until it listens on ``port``; stopped by its PID."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start (exit {process.poll()}): {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
