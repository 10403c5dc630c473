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
from tests.balancers import DEPLOY, nginx_config
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

NODE_ENV = {
    # Not the nodes' bare addresses: a balancer's probe must name a host the nodes serve.
    "ALLOWED_HOSTS": "localhost",
    "TRUSTED_PROXIES": "1",  # as deploy/'s comments tell
    "REALTIME_NODE_REPORT_SECONDS": "0.5",  # a drain is heard within half a second
    "REALTIME_DRAIN_SOCKETS_PER_SECOND": "2",
}


def haproxy_config(*, port: int, node_ports: list[int], bounded_load: bool = True) -> str:
    """deploy/haproxy/wedsync.cfg with its bind on a loopback port and the test's nodes as servers;
    without ``bounded_load``, its hashing by user is not bounded (see the affinity test)."""
    text = (DEPLOY / "haproxy" / "wedsync.cfg").read_text()
    if not bounded_load:
        text, bounds = re.subn(r"(?m)^    hash-balance-factor \d+\n", "", text)
        assert bounds == 1, "the shipped config's bounded load changed"
    text, binds = re.subn(r"(?m)^    bind :80$", f"    bind 127.0.0.1:{port}", text)
    assert len(node_ports) == 2, "the shipped config names two nodes in each backend"

    def on_loopback(line: re.Match[str]) -> str:
        return f"    server n{line.group(1)} 127.0.0.1:{node_ports[int(line.group(1)) - 1]}"

    text, servers = re.subn(r"(?m)^    server n(\d) 10\.0\.1\.\d+:8000", on_loopback, text)
    text, hosts = re.subn(r"hdr Host wedsync\.example\.com$", "hdr Host localhost", text, flags=re.M)
    assert (binds, servers, hosts) == (1, 4, 1), "the shipped config's bind, server or probe lines changed"
    return text


@contextlib.contextmanager
def haproxy(nodes: Cluster, var_dir: Path, *, bounded_load: bool = True) -> Iterator[int]:
    port = free_port()
    config = var_dir / "haproxy.cfg"
    node_ports = [node.port for node in nodes.nodes]
    config.write_text(haproxy_config(port=port, node_ports=node_ports, bounded_load=bounded_load))
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


async def test_one_persons_devices_meet_on_one_node_and_move_together_behind_haproxy(
    party: WeddingParty, tmp_path: Path
) -> None:
    """deploy/haproxy's sockets_by_user backend: devices naming the same user (``?u=``) are hashed
    to one node; when that node drains, the person's devices come back together on the other. The
    load bound is left out here: at a handful of sockets any node is soon 25 % above the average,
    and HAProxy moves keys off it by design (at thousands it binds only a node well above the rest)."""
    people = [party.priya, party.ana, party.ben, party.victor, party.paula, party.carmen, party.flora, party.gil]
    devices: dict[int, list[RealtimeClient]] = {}
    with cluster(tmp_path, extra_env=NODE_ENV) as nodes, haproxy(nodes, tmp_path, bounded_load=False) as port:
        through = f"ws://localhost:{port}/ws/v1/"
        registry = redis.Redis.from_url(nodes.redis.url)
        try:
            for member in people:
                devices[member.user_id] = [
                    await client_for(member, f"{through}?device={name}", affinity=str(member.user_id))
                    for name in ("phone", "laptop")
                ]
            homes = {user: {welcome(client)["node"] for client in clients} for user, clients in devices.items()}
            assert all(len(nodes_of_user) == 1 for nodes_of_user in homes.values()), homes

            drained = next(iter(homes[party.priya.user_id]))
            other = "n2" if drained == "n1" else "n1"
            moving = [user for user, home in homes.items() if home == {drained}]
            registry.set(node_drain_key(node=drained), b"1")
            await until(
                lambda: all(connected_to(client, other) for user in moving for client in devices[user]),
                within=30,
                what=f"the devices of {drained}'s people on {other}",
            )
            staying = [user for user in homes if user not in moving]
            assert all(connected_to(client, other) and not client.reconnects for u in staying for client in devices[u])
        finally:
            for clients in devices.values():
                for client in clients:
                    await client.close()
            registry.close()
