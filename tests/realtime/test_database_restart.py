"""PostgreSQL restarted under traffic (issue 22): a node on a cluster of the test's own. While the
database is down, publishes are answered ``unavailable`` with a ``retry_after`` (never
``server_error``, never a traceback), sockets stay open, ``/readyz`` says the database is down and
new sockets are told to come back (1013); once it is back, everything acknowledged before and after
reaches the other members exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from realtime.client import ClientError, RealtimeClient
from realtime.db import DatabaseWatch
from tests.realtime.nodes import ROOT, Node, node_environment
from tests.realtime.test_nodes import drain, protocols
from tests.servers import free_port, postgres_binaries, postgres_server, redis_server

NO_POSTGRES_BINARIES = pytest.mark.skipif(
    postgres_binaries() is None, reason="PostgreSQL's server binaries are not installed"
)


def readyz(node: Node) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}/readyz", headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310  loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def seeded(env: dict[str, str]) -> dict[str, Any]:
    """Migrate the test's own database and seed one demo wedding, with ready-made tokens."""
    for command in (["migrate", "-v0"], ["seed_demo", "--json", "--weddings", "1", "--guests", "2"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
    wedding: dict[str, Any] = json.loads(done.stdout)["weddings"][0]
    return wedding


async def until_ready(node: Node, ready: bool, within: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            status, body = await asyncio.to_thread(readyz, node)
            if (status == 200) is ready:
                return body
            await asyncio.sleep(0.2)


@pytest.mark.requires_redis
@NO_POSTGRES_BINARIES
async def test_a_postgres_restart_under_traffic_answers_unavailable_and_loses_nothing(tmp_path: Path) -> None:
    with postgres_server() as postgres, redis_server() as redis:
        env = node_environment(redis_url=redis.url, extra={"DATABASE_URL": postgres.url})
        wedding = await asyncio.to_thread(seeded, env)
        members = {member["role"]: member for member in wedding["members"]}
        topic = f"wedding:{wedding['id']}"
        node = Node(name="n1", port=free_port(), log_path=tmp_path / "n1.log")
        node.start(env)
        # The first op after PostgreSQL goes waits out the pool's timeout (DATABASE_POOL_TIMEOUT, 10 s);
        # the node knows then, and answers the next ones at once.
        writer = RealtimeClient(node.url, token=members["planner"]["token"], request_timeout=20)
        reader = RealtimeClient(node.url, token=next(m for m in wedding["members"] if m["role"] == "guest")["token"])
        try:
            for client in (writer, reader):
                await client.start()
                await client.subscribe(topic)
            acknowledged = [
                (await writer.publish(topic, "chat.message", {"text": f"before {i}"}))["seq"] for i in range(5)
            ]

            await asyncio.to_thread(postgres.stop)
            refusals = []
            for i in range(3):
                with pytest.raises(ClientError) as refused:
                    await writer.publish(topic, "chat.message", {"text": f"during {i}"}, retries=0)
                refusals.append(refused.value)
            assert {(error.code, error.data.get("retry_after")) for error in refusals} == {("unavailable", 2.0)}
            assert all("try again" in error.message for error in refusals)
            assert (await writer.request("heartbeat"))["server_time"], "the socket stays open"
            body = await until_ready(node, False)
            assert body["down"] == ["database"]
            async with connect(node.url, subprotocols=protocols(members["couple"]["token"])) as ws:
                frame = json.loads(await ws.recv())
                assert (frame["code"], frame["retry_after"]) == ("unavailable", 2.0)
                await ws.wait_closed()
                assert ws.close_code == 1013

            await asyncio.to_thread(postgres.start)
            await until_ready(node, True)
            acknowledged += [
                (await writer.publish(topic, "chat.message", {"text": f"after {i}"}))["seq"] for i in range(5)
            ]

            events = await drain(reader, len(acknowledged), within=20)
            assert (
                [event["seq"] for event in events] == acknowledged == list(range(acknowledged[0], acknowledged[0] + 10))
            )
            assert [event["data"]["text"] for event in events] == [f"before {i}" for i in range(5)] + [
                f"after {i}" for i in range(5)
            ]
            assert writer.close_codes == [] and reader.close_codes == []
        finally:
            await writer.close()
            await reader.close()
            node.stop()
        log = node.log()
        assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:5000]
        assert "socket.database_unavailable" in log
        assert "found the database away" in log, "/readyz answered from the node's watch, not the pool's wait"


@pytest.mark.requires_postgres
@pytest.mark.django_db
def test_a_failed_hop_with_the_database_answering_is_not_taken_for_an_outage() -> None:
    """A hop that waited out a busy pool fails like one whose database went away: the watch asks
    PostgreSQL itself on a fresh connection, which answers, so the node never answers database ops
    unavailable for it."""
    watch = DatabaseWatch()
    watch.failed()
    seen_away = []
    deadline = time.monotonic() + 10
    while watch._prober is not None and time.monotonic() < deadline:
        seen_away.append(watch.away)
        time.sleep(0.01)
    assert watch._prober is None, "the probe connected and stopped"
    assert not any(seen_away) and not watch.away
