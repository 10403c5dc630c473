"""Two real daphne nodes with a small database pool, hammered with concurrent connects, subscribes
and publishes: PostgreSQL never sees more than nodes x DATABASE_POOL_MAX_SIZE of their connections,
and nothing fails for want of one."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from channels.db import database_sync_to_async
from django.db import connection

from realtime.client import RealtimeClient
from tests.factories import MemberFactory, UserFactory, WeddingFactory
from tests.realtime.conftest import bearer
from tests.realtime.nodes import cluster

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

BUDGET = 3  # DATABASE_POOL_MAX_SIZE per node, against REALTIME_THREAD_POOL=24 threads each
SOCKETS = 30
PUBLISHES_EACH = 5


@dataclass
class ConnectionSampler:
    """Polls pg_stat_activity for the test database from a thread of its own, keeping the most
    connections seen: from every node together (beyond the test process's own, counted before the
    nodes started) and from each node by its application_name."""

    database: str
    baseline: int = 0
    most_total: int = 0
    most_by_node: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _count(self, cursor: psycopg.Cursor) -> tuple[int, dict[str, int]]:
        cursor.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY application_name",
            [self.database],
        )
        rows = cursor.fetchall()
        by_node = {name.removeprefix("wedsync:"): count for name, count in rows if name in ("wedsync:n1", "wedsync:n2")}
        return sum(count for _name, count in rows), by_node

    def start(self) -> None:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{self.database}", autocommit=True) as admin:
            self.baseline, _ = self._count(admin.cursor())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{self.database}", autocommit=True) as admin:
            cursor = admin.cursor()
            while not self._stop.wait(0.02):
                total, by_node = self._count(cursor)
                self.most_total = max(self.most_total, total - self.baseline)
                for node, count in by_node.items():
                    self.most_by_node[node] = max(self.most_by_node.get(node, 0), count)
                self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def _planners(count: int) -> tuple[int, list[Any]]:
    wedding = WeddingFactory()
    members = [
        MemberFactory(wedding=wedding, user=UserFactory(username=f"planner{i}-{wedding.slug}"), role="planner")
        for i in range(count)
    ]
    return wedding.pk, members


async def test_two_nodes_stay_within_their_database_budget_under_a_hammer(tmp_path: Path) -> None:
    wedding_id, members = await database_sync_to_async(_planners)(SOCKETS)
    tokens = [await bearer(member) for member in members]
    sampler = ConnectionSampler(database=connection.settings_dict["NAME"])
    sampler.start()
    extra = {"DATABASE_POOL_MAX_SIZE": str(BUDGET), "DATABASE_POOL_MIN_SIZE": "1", "REALTIME_THREAD_POOL": "24"}
    topic = f"wedding:{wedding_id}"
    clients: list[RealtimeClient] = []
    try:
        with cluster(tmp_path, extra_env=extra) as nodes:
            urls = [node.url for node in nodes.nodes]
            clients = [RealtimeClient(urls[i % 2], token=token, reconnect=False) for i, token in enumerate(tokens)]
            await asyncio.gather(*(client.start() for client in clients))  # every connect at once
            await asyncio.gather(*(client.subscribe(topic) for client in clients))
            await asyncio.gather(
                *(
                    client.publish(topic, "chat.message", {"text": f"{i}/{n}"})
                    for i, client in enumerate(clients)
                    for n in range(PUBLISHES_EACH)
                )
            )
            published = SOCKETS * PUBLISHES_EACH
            for client in clients:
                seqs: list[int] = []
                async with asyncio.timeout(60):
                    while len(seqs) < published:
                        frame = await client.next_event()
                        assert frame.get("op") == "event", frame
                        seqs.append(frame["seq"])
                assert sorted(seqs) == list(range(1, published + 1))
                assert client.reconnects == 0 and client.close_codes == []
            logs = [node.log() for node in nodes.nodes]
    finally:
        sampler.stop()
        for client in clients:
            await client.close()
    print(f"most connections: {sampler.most_total} from both nodes, by node {sampler.most_by_node}")
    assert sampler.samples > 10
    assert sampler.most_total <= 2 * BUDGET, (sampler.most_total, sampler.most_by_node)
    # Each node used its pool (the sampler saw them) and never went past it.
    assert set(sampler.most_by_node) == {"n1", "n2"}, sampler.most_by_node
    assert all(1 <= most <= BUDGET for most in sampler.most_by_node.values()), sampler.most_by_node
    for log in logs:
        assert "Traceback" not in log and "PoolTimeout" not in log and "server_error" not in log
