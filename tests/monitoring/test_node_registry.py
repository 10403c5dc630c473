"""The node registry (issue 21, monitoring/node_reports.py): each daphne node reports what it holds
and how it fares into Redis every few seconds; the fleet is the reports that have not expired, so a
node that stops drops out on its own."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import redis
import structlog
from django.test import Client
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from monitoring.node_reports import NodeReport, node_report_decode, node_report_encode, registry_client
from monitoring.selectors import nodes_reported
from monitoring.services.nodes import node_report_write
from realtime.node.registry import DrainPace, drain_slice
from tests.api.test_events_publish import api
from tests.personas import WeddingParty, make_coordinator, make_superuser
from tests.presence.test_alerts_api import as_user
from tests.realtime.conftest import bearer
from tests.realtime.nodes import Cluster, Node, cluster
from tests.records.node_sockets import SubscribedSockets
from tests.servers import free_port
from wedsync.models import AuditLog
from wedsync.redis_keys import NODE_REGISTRY, node_drain_key, node_report_key
from wedsync.services.service_accounts import service_account_create, service_account_key_issue

pytestmark = [pytest.mark.requires_redis]

REPORT_SECONDS = 0.5  # the nodes' interval in these tests: a report expires 1.5 s after the last one
SEEN_WITHIN = 15.0


def ours(fleet: list[NodeReport]) -> list[NodeReport]:
    """The reports these tests wrote ("n-..."): a hub another test ran in this process reports into
    the same Redis, under this machine's name, for a while after."""
    return [node for node in fleet if node.name.startswith("n-")]


def a_report(name: str, **fields: Any) -> NodeReport:
    now = time.time()
    values: dict[str, Any] = {
        "name": name,
        "version": "2026.12.1",
        "started_at": now - 60,
        "reported_at": now,
        "sockets": 3,
        "subscriptions_by_role": {"guest": 2, "planner": 1},
        "weddings": 1,
        "cpu_percent": 12.5,
        "rss_bytes": 80_000_000,
        "loop_lag_ms": 1.5,
    }
    return NodeReport(**{**values, **fields})


@pytest.fixture
def registry() -> Any:
    client = registry_client()
    assert client is not None, "the tests run with REDIS_URL"
    yield client
    names = [name.decode() for name in client.zrange(NODE_REGISTRY, 0, -1)]  # type: ignore[union-attr]
    client.delete(NODE_REGISTRY, *(node_report_key(node=name) for name in names))


def test_a_report_is_read_back_as_written_and_a_stray_shape_is_refused() -> None:
    report = a_report("n-roundtrip")
    assert node_report_decode(node_report_encode(report)) == report
    with pytest.raises(msgspec.ValidationError):  # another release's shape
        node_report_decode(b'{"name": "n", "sockets": "many"}')


def test_the_fleet_is_the_reports_that_have_not_expired_by_name(registry: redis.Redis) -> None:
    node_report_write(client=registry, report=a_report("n-b"), ttl=15)
    node_report_write(client=registry, report=a_report("n-a", sockets=0, subscriptions_by_role={}), ttl=15)
    assert 0 < registry.pttl(node_report_key(node="n-a")) <= 15_000
    assert [(node.name, node.sockets) for node in ours(nodes_reported())] == [("n-a", 0), ("n-b", 3)]

    registry.delete(node_report_key(node="n-b"))  # as its TTL would: n-b stopped reporting
    registry.set(node_report_key(node="n-c"), b'{"name": "n-c"}')  # a shape this release cannot read
    registry.zadd(NODE_REGISTRY, {"n-c": time.time()})
    with structlog.testing.capture_logs() as logs:
        assert [node.name for node in ours(nodes_reported())] == ["n-a"]
    assert {"event": "nodes.report_unreadable", "node": "n-c", "log_level": "warning"} in logs


def test_a_name_silent_for_a_day_leaves_the_index(registry: redis.Redis) -> None:
    node_report_write(client=registry, report=a_report("n-old", reported_at=time.time() - 90_000), ttl=15)
    node_report_write(client=registry, report=a_report("n-new"), ttl=15)
    indexed = [name.decode() for name in registry.zrange(NODE_REGISTRY, 0, -1)]  # type: ignore[union-attr]
    assert "n-new" in indexed and "n-old" not in indexed


# --- Two real nodes -------------------------------------------------------------------------------------


@pytest.fixture
def nodes(tmp_path: Path) -> Any:
    extra = {"REALTIME_NODE_REPORT_SECONDS": str(REPORT_SECONDS), "WEDSYNC_VERSION": "2026.12.1-test"}
    with cluster(tmp_path, extra_env=extra) as running:
        yield running


async def fleet_when(client: redis.Redis, done: Any) -> list[NodeReport]:
    """The fleet as soon as ``done(fleet)`` holds (reports come every REPORT_SECONDS), or fail."""
    deadline = time.monotonic() + SEEN_WITHIN
    while True:
        fleet = nodes_reported(client=client)
        if done(fleet):
            return fleet
        assert time.monotonic() < deadline, fleet
        await asyncio.sleep(0.1)


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
async def test_each_node_reports_what_it_holds_and_a_stopped_one_drops_out(nodes: Cluster, party: WeddingParty) -> None:
    client = redis.Redis.from_url(nodes.redis.url)
    sockets = SubscribedSockets(nodes, wedding_id=party.wedding.pk)
    try:
        for member, index in ((party.priya, 0), (party.gil, 0), (party.ana, 1)):
            await sockets.open(member, index)

        def both_hold_their_sockets(fleet: list[NodeReport]) -> bool:
            # Subscriptions too: a report may come between a socket's connect and its subscribe's check.
            held = [(node.name, node.sockets, sum(node.subscriptions_by_role.values())) for node in fleet]
            return held == [("n1", 2, 2), ("n2", 1, 1)]

        first, second = await fleet_when(client, both_hold_their_sockets)
        assert (first.subscriptions_by_role, second.subscriptions_by_role) == (
            {"guest": 1, "planner": 1},
            {"couple": 1},
        )
        for node in (first, second):
            assert node.version == "2026.12.1-test" and node.weddings == 1
            assert node.started_at <= node.reported_at <= time.time() + 1
            assert node.rss_bytes > 10_000_000 and node.cpu_percent >= 0 and node.loop_lag_ms >= 0

        nodes.nodes[1].stop()
        remaining = await fleet_when(client, lambda fleet: [node.name for node in fleet] == ["n1"])
        assert remaining[0].sockets == 2
    finally:
        await sockets.close_all()
        client.close()


# --- The staff API --------------------------------------------------------------------------------------


@pytest.mark.requires_postgres
@pytest.mark.django_db
def test_superusers_read_the_fleet_and_nobody_else_does(registry: redis.Redis, party: WeddingParty) -> None:
    node_report_write(client=registry, report=a_report("n-api", started_at=1_765_000_000.0), ttl=15)
    answer = as_user(api(), make_superuser()).get("/api/v1/nodes/")
    assert answer.status_code == 200, answer.json()
    (node,) = [node for node in answer.json()["nodes"] if node["name"].startswith("n-")]
    assert node["name"] == "n-api" and node["started_at"] == "2025-12-06T05:46:40Z"
    assert node["draining"] is False
    assert (node["sockets"], node["subscriptions_by_role"], node["rss_bytes"]) == (
        3,
        {"guest": 2, "planner": 1},
        80_000_000,
    )

    account = service_account_create(name="CRM", scopes=["read"], weddings=[party.wedding], actor=None)
    _key, raw = service_account_key_issue(account=account, name="prod", actor=None)
    keyed = api()
    keyed.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    for client in (as_user(api(), make_coordinator(party.wedding)), as_user(api(), party.priya.user), keyed):
        refused = client.get("/api/v1/nodes/")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert api().get("/api/v1/nodes/").status_code == 401


@pytest.mark.requires_postgres
@pytest.mark.django_db
def test_the_admin_shows_superusers_the_fleet_and_reloads_itself(registry: redis.Redis, party: WeddingParty) -> None:
    node_report_write(client=registry, report=a_report("n-page", rss_bytes=123_000_000, delivery_p99_ms=42.5), ttl=15)
    browser = Client()
    browser.force_login(make_superuser())
    assert 'href="/admin/nodes/"' in browser.get("/admin/").content.decode()
    page = browser.get("/admin/nodes/")
    html = page.content.decode()
    assert page.status_code == 200 and '<meta http-equiv="refresh" content="5">' in html
    row = re.search(r"<tr>\s*<th scope=\"row\">n-page</th>(.*?)</tr>", html, re.S)
    assert row is not None, html
    assert [cell for cell in re.findall(r"<td>(.*?)</td>", row.group(1)) if ":" not in cell] == [
        "2026.12.1",
        "3",
        "guest 2, planner 1",
        "1",
        "12.5",
        "123",
        "1.5",
        "42.5",
    ]

    coordinator = Client()
    coordinator.force_login(make_coordinator(party.wedding))
    assert 'href="/admin/nodes/"' not in coordinator.get("/admin/").content.decode()
    assert coordinator.get("/admin/nodes/").status_code == 403
    assert Client().get("/admin/nodes/").status_code == 302  # to the admin's sign-in


# --- Draining a node ------------------------------------------------------------------------------------


@pytest.mark.requires_postgres
@pytest.mark.django_db
def test_a_superuser_drains_and_resumes_a_node_from_the_admin_and_it_is_audited(
    registry: redis.Redis, party: WeddingParty
) -> None:
    node_report_write(client=registry, report=a_report("n-drain"), ttl=15)
    operator = make_superuser()
    browser = Client()
    browser.force_login(operator)
    assert 'action="/admin/nodes/n-drain/drain/"' in browser.get("/admin/nodes/").content.decode()

    drained = browser.post("/admin/nodes/n-drain/drain/")
    assert drained.status_code == 302 and drained["Location"] == "/admin/nodes/"
    assert registry.exists(node_drain_key(node="n-drain"))
    assert node_report_write(client=registry, report=a_report("n-drain"), ttl=15) is True  # what the node hears
    browser.post("/admin/nodes/n-drain/resume/")
    assert not registry.exists(node_drain_key(node="n-drain"))
    assert node_report_write(client=registry, report=a_report("n-drain"), ttl=15) is False
    assert list(
        AuditLog.objects.filter(actor=operator, target="node:n-drain").order_by("id").values_list("action", "outcome")
    ) == [("node.drain", "success"), ("node.resume", "success")]

    assert browser.post("/admin/nodes/n-unknown/drain/").status_code == 404
    assert browser.get("/admin/nodes/n-drain/drain/").status_code == 405
    coordinator = Client()
    coordinator.force_login(make_coordinator(party.wedding))
    assert coordinator.post("/admin/nodes/n-drain/drain/").status_code == 403
    assert not registry.exists(node_drain_key(node="n-drain"))


def readiness(node: Node) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/readyz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
async def test_a_drained_node_closes_its_sockets_with_1001_takes_no_new_ones_and_resumes(
    nodes: Cluster, party: WeddingParty
) -> None:
    client = redis.Redis.from_url(nodes.redis.url)
    sockets = SubscribedSockets(nodes, wedding_id=party.wedding.pk)
    try:
        on_first = [await sockets.open(member, 0) for member in (party.priya, party.gil, party.ana)]
        on_second = await sockets.open(party.carmen, 1)
        await fleet_when(client, lambda fleet: [(node.name, node.sockets) for node in fleet] == [("n1", 3), ("n2", 1)])

        client.set(node_drain_key(node="n1"), b"1")  # as the admin's Drain button does
        for socket in on_first:
            async with asyncio.timeout(SEEN_WITHIN):
                await socket.ws.wait_closed()
            assert socket.ws.close_code == 1001 and socket.other[-1]["code"] == "unavailable", socket.other
        fleet = await fleet_when(
            client,
            lambda fleet: bool(fleet) and (fleet[0].name, fleet[0].draining, fleet[0].sockets) == ("n1", True, 0),
        )
        assert not fleet[1].draining and fleet[1].sockets == 1 and on_second.ws.close_code is None
        assert (readiness(nodes.nodes[0]), readiness(nodes.nodes[1])) == (503, 200)

        token = await bearer(party.priya)
        async with connect(
            nodes.nodes[0].url, subprotocols=[Subprotocol("wedsync.v1"), Subprotocol(f"bearer.{token}")]
        ) as refused:
            frame = json.loads(await refused.recv())
            await refused.wait_closed()
        assert frame["op"] == "error" and frame["code"] == "unavailable" and refused.close_code == 1001

        client.delete(node_drain_key(node="n1"))  # Resume
        await fleet_when(client, lambda fleet: bool(fleet) and not fleet[0].draining)
        assert readiness(nodes.nodes[0]) == 200
        again = await sockets.open(party.priya, 0)
        assert again.ws.close_code is None
    finally:
        await sockets.close_all()
        client.close()


@pytest.mark.requires_postgres
@pytest.mark.django_db
def test_with_redis_away_the_fleet_is_unknown_not_empty(settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    operator = make_superuser()
    answer = as_user(api(), operator).get("/api/v1/nodes/")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"
    assert answer["Retry-After"] == "5"
    browser = Client()
    browser.force_login(operator)
    page = browser.get("/admin/nodes/")
    assert page.status_code == 200 and "Redis, where the nodes report, did not answer" in page.content.decode()
    drained = browser.post("/admin/nodes/n-any/drain/", follow=True)
    assert "Nothing was changed" in drained.content.decode()
    assert not AuditLog.objects.filter(action="node.drain").exists()


def test_a_drain_keeps_its_pace_at_any_rate() -> None:
    slow, fast = DrainPace(per_second=1), DrainPace(per_second=100)
    assert [slow.take(seconds=0.25) for _ in range(8)] == [0, 0, 0, 1, 0, 0, 0, 1]
    assert [fast.take(seconds=0.25) for _ in range(4)] == [25, 25, 25, 25]


class TellableSocket:
    def __init__(self) -> None:
        self.told = 0

    def going_away(self) -> None:
        self.told += 1


def test_a_drain_tells_each_socket_once_a_slice_at_a_time() -> None:
    sockets = {f"c{i}": TellableSocket() for i in range(5)}
    hub = SimpleNamespace(sockets=sockets, feeds={}, draining=True)
    told: set[str] = set()
    drain_slice(hub, count=2, told=told)
    assert [socket.told for socket in sockets.values()] == [1, 1, 0, 0, 0]
    del sockets["c0"]  # its close completed
    drain_slice(hub, count=2, told=told)
    assert [socket.told for socket in sockets.values()] == [1, 1, 1, 0]
    drain_slice(hub, count=10, told=told)
    assert [socket.told for socket in sockets.values()] == [1, 1, 1, 1] and told == set(sockets)
