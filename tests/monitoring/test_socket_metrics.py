"""The socket path's metrics (issue 21, monitoring/metrics.py) after real traffic on two daphne
nodes, each scraped on its own port as Prometheus would; and the Celery worker's task metrics,
scraped on WORKER_METRICS_PORT."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.personas import WeddingParty
from tests.realtime.conftest import bearer
from tests.realtime.nodes import Cluster, cluster, node_environment
from tests.records.node_sockets import NodeSocket, SubscribedSockets
from tests.servers import celery_worker_with_beat, free_port, redis_server

pytestmark = [pytest.mark.requires_redis, pytest.mark.requires_postgres, pytest.mark.django_db(transaction=True)]

TOKEN = "scrape-" + "m" * 40
WITHIN = 15.0


class Scrape:
    """One ``/metrics`` answer, its samples looked up by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the series does not exist (a counter never incremented)."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(key) == wanted for key, wanted in labels.items()):
                return float(sample.value)
        return 0.0


def scrape(port: int, *, token: str | None = TOKEN) -> Scrape:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310  (a local test server)
        return Scrape(answer.read().decode())


async def scrape_when(port: int, holds: Callable[[Scrape], bool]) -> Scrape:
    """The node's metrics as soon as ``holds`` them (gauges are set with each node report), or fail."""
    deadline = time.monotonic() + WITHIN
    while True:
        found = await asyncio.to_thread(scrape, port)
        if holds(found):
            return found
        assert time.monotonic() < deadline, [s for s in found.samples if s.name.startswith("wedsync_")]
        await asyncio.sleep(0.2)


@pytest.fixture
def nodes(tmp_path: Path) -> Any:
    extra = {"METRICS_TOKEN": TOKEN, "REALTIME_NODE_REPORT_SECONDS": "0.5"}
    with cluster(tmp_path, extra_env=extra) as running:
        yield running


async def _events_arrive(socket: NodeSocket, count: int) -> None:
    deadline = time.monotonic() + WITHIN
    while len(socket.events) < count:
        assert time.monotonic() < deadline, socket.events
        await asyncio.sleep(0.05)


async def test_each_node_counts_what_went_through_it(nodes: Cluster, party: WeddingParty) -> None:
    first, second = (node.port for node in nodes.nodes)
    topic = f"wedding:{party.wedding.pk}"
    sockets = SubscribedSockets(nodes, wedding_id=party.wedding.pk)
    try:
        priya = await sockets.open(party.priya, 0)  # the planner, on the first node
        ana, ben, gil = [await sockets.open(member, 1) for member in (party.ana, party.ben, party.gil)]
        for number in range(5):
            reply = await priya.request("publish", topic=topic, type="chat.message", data={"text": f"hi {number}"})
            assert reply["status"] == "ok", reply
        for socket in (ana, ben, gil):
            await _events_arrive(socket, 5)

        # The publishing node counts the events; the node holding the three readers, the deliveries.
        published = await asyncio.to_thread(scrape, first)
        assert published.value("wedsync_events_published_total", type="chat.message", priority="normal") == 5
        assert published.value("wedsync_socket_connects_total", outcome="accepted") == 1
        readers = await scrape_when(
            second,
            lambda found: (
                found.value("wedsync_sockets_open", role="couple") == 2
                and found.value("wedsync_sockets_open", role="guest") == 1
            ),
        )
        assert readers.value("wedsync_events_published_total", type="chat.message", priority="normal") == 0
        assert readers.value("wedsync_socket_connects_total", outcome="accepted") == 3
        assert readers.value("wedsync_event_deliveries_total") == 15
        assert readers.value("wedsync_fanout_sockets_count") == 5
        assert readers.value("wedsync_fanout_sockets_sum") == 15
        assert readers.value("wedsync_fanout_sockets_bucket", le="1.0") == 0  # every event went to all three
        assert readers.value("wedsync_delivery_latency_seconds_count") == 5
        assert 0 < readers.value("wedsync_delivery_latency_seconds_sum") < 5 * 5
        assert readers.value("wedsync_delivery_latency_seconds_bucket", le="5.0") == 5
        assert readers.value("wedsync_subscriptions_open", role="couple") == 2
        assert readers.value("wedsync_sockets_open", role="planner") == 0  # the planner is on the other node
        assert readers.value("wedsync_weddings_held") == 1
        assert readers.value("wedsync_node_draining") == 0
        assert readers.value("wedsync_presence_changes_total", kind="joins") == 3  # its three subscribers joined

        # Presence crossed from the readers' node to the planner's, who sees the wedding.
        seen = await scrape_when(first, lambda found: found.value("wedsync_presence_latency_seconds_count") >= 3)
        assert seen.value("wedsync_presence_latency_seconds_bucket", le="10.0") == seen.value(
            "wedsync_presence_latency_seconds_count"
        )

        # A late subscriber is replayed the five events.
        victor = await NodeSocket.open(nodes.nodes[0].url, await bearer(party.victor))
        sockets.opened.append(victor)
        reply = await victor.request("subscribe", topic=topic, since=0)
        assert reply["status"] == "ok", reply
        await _events_arrive(victor, 5)
        replayed = await scrape_when(first, lambda found: found.value("wedsync_replay_events_sum") == 5)
        assert replayed.value("wedsync_replay_events_count") == 2  # the planner's fresh subscribe, and this

        # A normal close, and a refused handshake, each where it happened.
        await gil.close()
        await scrape_when(second, lambda found: found.value("wedsync_socket_closes_total", code="normal") == 1)
        await scrape_when(second, lambda found: found.value("wedsync_sockets_open", role="guest") == 0)  # next report
        assert await _close_code_for(nodes.nodes[0].url, token="nonsense") == 4401
        after = await asyncio.to_thread(scrape, first)
        assert after.value("wedsync_socket_connects_total", outcome="unauthorized") == 1
        assert {"wedsync_thread_pool_queued", "wedsync_event_loop_lag_seconds"} <= after.names()
    finally:
        await sockets.close_all()


async def _close_code_for(url: str, *, token: str) -> int | None:
    """The code a node closes a socket with this token with (its error frame read first)."""
    async with connect(url, subprotocols=[Subprotocol("wedsync.v1"), Subprotocol(f"bearer.{token}")]) as ws:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return None if closed.rcvd is None else closed.rcvd.code


def test_a_node_refuses_a_scrape_without_the_token(tmp_path: Path) -> None:
    extra = {"METRICS_TOKEN": TOKEN}
    with cluster(tmp_path, count=1, extra_env=extra) as running:
        port = running.nodes[0].port
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(port, token="wrong-" + "x" * 40)
        assert refused.value.code == 401
        assert scrape(port).value("wedsync_socket_connects_total", outcome="accepted") == 0


def test_the_worker_serves_its_task_runs_on_its_own_port_and_nothing_else(tmp_path: Path) -> None:
    port = free_port()
    with redis_server() as redis:
        extra = {"METRICS_TOKEN": TOKEN, "WORKER_METRICS_PORT": str(port), "PRESENCE_SWEEP_SECONDS": "1"}
        with celery_worker_with_beat(node_environment(redis_url=redis.url, extra=extra), tmp_path):
            _worker_scraped(port)


def _worker_scraped(port: int) -> None:
    """Beat sends a sweep every second: the worker's port shows its runs, to the token only."""
    if True:
        deadline = time.monotonic() + 30
        while True:
            try:
                found = scrape(port)
            except (urllib.error.URLError, ConnectionError):
                found = None
            if found is not None and found.value(
                "wedsync_task_runs_total", task="presence.tasks.sweep_presence", outcome="succeeded"
            ):
                break
            assert time.monotonic() < deadline, "the worker never served a sweep's run"
            time.sleep(0.3)
        assert found.value("wedsync_task_duration_seconds_count", task="presence.tasks.sweep_presence") >= 1
        assert found.value("wedsync_task_runs_total", task="presence.tasks.sweep_presence", outcome="failed") == 0
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(port, token=None)
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as elsewhere:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/", timeout=5)
        assert elsewhere.value.code == 404
