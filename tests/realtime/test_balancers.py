"""The shipped load-balancer configs (deploy/haproxy, deploy/nginx), run as they are by Debian's real
binaries in front of two daphne nodes: a drained node's sockets move to the other one, a node
killed under traffic loses nobody, and every reader gets every event once, in order. And the
Python client's side of it: a refusal that is not final is tried again, after its retry_after."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from realtime.client import RealtimeClient, RefusedForNow
from tests.personas import WeddingParty
from tests.realtime.conftest import bearer
from tests.realtime.nodes import Cluster, cluster
from tests.realtime.test_nodes import client_for, drain, welcome
from tests.servers import free_port, listening_process
from wedsync.redis_keys import node_drain_key

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.requires_haproxy,
    pytest.mark.requires_nginx,
    pytest.mark.django_db(transaction=True),
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NODE_ENV = {
    # Not the nodes' bare addresses: a balancer's probe must name a host the nodes serve.
    "ALLOWED_HOSTS": "localhost",
    "TRUSTED_PROXIES": "1",  # as deploy/'s comments tell
    "REALTIME_NODE_REPORT_SECONDS": "0.5",  # a drain is heard within half a second
    "REALTIME_DRAIN_SOCKETS_PER_SECOND": "2",
}


def haproxy_config(*, port: int, node_ports: list[int]) -> str:
    """deploy/haproxy/wedsync.cfg with its bind on a loopback port and the test's nodes as servers."""
    text = (DEPLOY / "haproxy" / "wedsync.cfg").read_text()
    text, binds = re.subn(r"(?m)^    bind :80$", f"    bind 127.0.0.1:{port}", text)
    text, servers = re.subn(r"(?m)^    server n\d .*\n", "", text)
    text, hosts = re.subn(r"hdr Host wedsync\.example\.com$", "hdr Host localhost", text, flags=re.M)
    assert (binds, servers, hosts) == (1, 2, 1), "the shipped config's bind, server or probe lines changed"
    return text + "".join(f"    server n{i + 1} 127.0.0.1:{p}\n" for i, p in enumerate(node_ports))


def nginx_config(*, port: int, node_ports: list[int], var_dir: Path) -> str:
    """deploy/nginx/wedsync.conf with its listen on a loopback port and the test's nodes upstream,
    inside the smallest main config that runs it in the foreground."""
    text = (DEPLOY / "nginx" / "wedsync.conf").read_text()
    text, listens = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{port};", text)
    first_server = re.search(r"(?m)^    server 10\.0\.1\.11:8000 (.*);$", text)
    assert first_server is not None and listens == 1, "the shipped config changed: update this test"
    text, servers = re.subn(r"(?m)^    server 10\.0\.1\.\d+:8000 .*;\n", "", text)
    assert servers == 2
    upstream = "".join(f"    server 127.0.0.1:{p} {first_server.group(1)};\n" for p in node_ports)
    text = text.replace("    zone wedsync_nodes 64k;\n", "    zone wedsync_nodes 64k;\n" + upstream, 1)
    temp = {name: var_dir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    (var_dir / "wedsync.conf").write_text(text)
    return (
        "daemon off;\nworker_processes 1;\nuser root;\n"
        f"pid {var_dir / 'nginx.pid'};\nerror_log {var_dir / 'nginx-error.log'} notice;\n"
        "events { worker_connections 1024; }\n"
        "http {\n    access_log off;\n"
        + "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items() if name != "body")
        + f"    client_body_temp_path {temp['body']};\n"
        f"    include {var_dir / 'wedsync.conf'};\n}}\n"
    )


@contextlib.contextmanager
def haproxy(nodes: Cluster, var_dir: Path) -> Iterator[int]:
    port = free_port()
    config = var_dir / "haproxy.cfg"
    config.write_text(haproxy_config(port=port, node_ports=[node.port for node in nodes.nodes]))
    with checked_and_started(
        "haproxy", check=["-c", "-q", "-f", str(config)], run=["-db", "-f", str(config)], port=port
    ):
        yield port


@contextlib.contextmanager
def nginx(nodes: Cluster, var_dir: Path) -> Iterator[int]:
    port = free_port()
    config = var_dir / "nginx.conf"
    config.write_text(nginx_config(port=port, node_ports=[node.port for node in nodes.nodes], var_dir=var_dir))
    # -e: the log nginx writes before it reads the config's own (its default is under /var/log).
    options = ["-e", str(var_dir / "nginx-early.log"), "-c", str(config)]
    with checked_and_started("nginx", check=["-t", "-q", *options], run=options, port=port):
        yield port


@contextlib.contextmanager
def checked_and_started(name: str, *, check: list[str], run: list[str], port: int) -> Iterator[None]:
    """Debian's binary checks the config, then serves it until the block ends (stopped by PID)."""
    binary = shutil.which(name)
    assert binary is not None
    subprocess.run([binary, *check], check=True)
    log = Path(check[-1]).with_suffix(".log")
    with listening_process([binary, *run], port=port, log=log):
        yield


async def until(condition: Callable[[], bool], *, within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110  client state, not an event
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


def on_node(clients: list[RealtimeClient], name: str) -> list[RealtimeClient]:
    return [client for client in clients if client.welcome and client.welcome["node"] == name]


def connected_to(client: RealtimeClient, name: str) -> bool:
    return client._connected.is_set() and welcome(client)["node"] == name


@pytest.mark.parametrize("balancer", [haproxy, nginx], ids=["haproxy", "nginx"])
async def test_a_drained_then_a_killed_node_behind_the_balancer_loses_nobody(
    party: WeddingParty, tmp_path: Path, balancer: Any
) -> None:
    topic = f"wedding:{party.wedding.pk}"
    readers: list[RealtimeClient] = []
    with cluster(tmp_path, extra_env=NODE_ENV) as nodes, balancer(nodes, tmp_path) as port:
        a, b = nodes.nodes
        through = f"ws://localhost:{port}/ws/v1/"
        registry = redis.Redis.from_url(nodes.redis.url)
        # The publisher stays on the node that survives.
        writer = await client_for(party.priya, b.url.replace("127.0.0.1", "localhost"))
        published = 0
        stop = asyncio.Event()

        async def publish_until_stopped() -> None:
            nonlocal published
            while not stop.is_set():
                await writer.publish(topic, "chat.message", {"text": f"m{published}"})
                published += 1
                await asyncio.sleep(0.02)

        async def join(member: Any) -> RealtimeClient:
            reader = await client_for(member, through)
            await reader.subscribe(topic, since=0)  # everything from the first event
            readers.append(reader)
            return reader

        try:
            await writer.subscribe(topic)
            publishing = asyncio.create_task(publish_until_stopped())
            for member in (party.ana, party.ben, party.gil, party.paula):
                await join(member)
            # the balancer spreads them over both nodes
            assert on_node(readers, "n1") and on_node(readers, "n2")

            # 1. Drain n1: its sockets are closed with 1001 and come back through the balancer to n2.
            registry.set(node_drain_key(node="n1"), b"1")
            await until(lambda: all(connected_to(r, "n2") for r in readers), within=20, what="all readers on n2")
            assert all(1001 in r.close_codes for r in readers if r.reconnects)
            newcomer = await join(party.carmen)  # a drained node takes nobody new (at most for a bounce)
            await until(lambda: connected_to(newcomer, "n2"), within=10, what="the newcomer on n2")

            # 2. Resume n1; newcomers reach it once the balancer sees it ready; then kill it under traffic.
            registry.delete(node_drain_key(node="n1"))
            for member in [party.victor, party.flora, party.miles, party.vik, party.olu] * 3:
                await join(member)
                if len(on_node(readers, "n1")) >= 2:
                    break
                await asyncio.sleep(1)
            killed = on_node(readers, "n1")
            assert killed, "the balancer sent nobody to the resumed node"
            a.signal(signal.SIGKILL)
            await until(lambda: all(connected_to(r, "n2") for r in readers), within=20, what="all readers on n2")
            await asyncio.sleep(0.5)
            stop.set()
            await publishing
            for reader in readers:
                seqs = [event["seq"] for event in await drain(reader, published, within=30)]
                assert seqs == list(range(1, published + 1))
                with pytest.raises(TimeoutError):
                    await reader.next_event(0.3)
            assert all(r.reconnects >= 1 for r in killed)
            assert "Traceback" not in b.log()
        finally:
            stop.set()
            for client in [writer, *readers]:
                await client.close()
            registry.close()


async def test_the_client_waits_out_a_refusal_that_says_when(party: WeddingParty, tmp_path: Path) -> None:
    """Refused for now (1013, too many handshakes from one address): without reconnecting, start()
    raises the refusal with its retry_after; reconnecting, it tries again only once that has passed."""
    window = 4
    limits = {"REALTIME_ADDRESS_HANDSHAKES": "1", "REALTIME_ADDRESS_HANDSHAKE_WINDOW_SECONDS": str(window)}
    with cluster(tmp_path, count=1, extra_env=limits) as nodes:
        node = nodes.nodes[0]
        tokens = [await bearer(member) for member in (party.ana, party.ana)]
        await asyncio.sleep(window - time.time() % window + 0.05)  # windows start on multiples of it
        first = await client_for(party.priya, node.url)
        once = RealtimeClient(node.url, token=tokens[0], reconnect=False)
        with pytest.raises(RefusedForNow) as refused:
            await once.start()
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        assert once.close_codes == [1013]
        patient = RealtimeClient(node.url, token=tokens[1])
        started = time.monotonic()
        try:
            await asyncio.wait_for(patient.start(), 20)  # the window ends; then it is let in
            # Refused once: its next try came when told, not early again and again.
            assert patient.close_codes == [1013] and time.monotonic() - started >= refused.value.retry_after - 0.2
        finally:
            for client in (first, once, patient):
                await client.close()
