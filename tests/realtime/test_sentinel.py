"""Redis Sentinel (issue 22, decision 0044): two nodes whose every Redis use goes through three
sentinels watching a master and its replica (Debian's redis-sentinel, loopback ports). The master
is killed under traffic; after the failover every acknowledged event reaches every entitled member
exactly once, presence is told again, publish rate limits still count, the cache and the Celery
broker reach the new master, and both nodes are ready again."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from realtime.client import ClientError
from realtime.limits.breaker import RATE_BREAKER_SECONDS
from tests.personas import WeddingParty
from tests.realtime.nodes import ROOT, cluster
from tests.realtime.test_database_restart import readyz
from tests.realtime.test_nodes import client_for, drain
from tests.servers import redis_sentinel_group

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.requires_redis_sentinel,
]

FLORIST_PER_MINUTE = 5


async def until(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.2)


def through_sentinels(env: dict[str, str], code: str) -> str:
    """Run ``code`` in a process of the nodes' settings (their sentinels): what it prints."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]  # after what Django's shell says it imported


async def test_the_master_killed_under_traffic_fails_over_and_nothing_is_lost(
    party: WeddingParty, tmp_path: Path
) -> None:
    topic = f"wedding:{party.wedding.pk}"
    with redis_sentinel_group(tmp_path) as group:
        extra = {
            "REDIS_URL": f"redis://127.0.0.1:{group.master.port}/3",  # its database applies; its address does not
            "REDIS_SENTINELS": group.sentinels,
            "REDIS_SENTINEL_MASTER": group.master_name,
            "REALTIME_RATE_LIMITS": json.dumps({"planner": 100000, "florist": FLORIST_PER_MINUTE}),
        }
        with cluster(tmp_path, extra_env=extra) as nodes:
            a, b = nodes.nodes
            writer = await client_for(party.priya, a.url)
            readers = [await client_for(party.gil, b.url), await client_for(party.ana, a.url)]
            vendor = await client_for(party.victor, b.url)
            florist = await client_for(party.flora, a.url)
            try:
                for client in (writer, *readers, vendor, florist):
                    await client.subscribe(topic)
                acknowledged = []
                for i in range(60):
                    reply = await writer.publish(topic, "chat.message", {"text": f"m{i}"})
                    acknowledged.append(reply["seq"])
                    if i == 20:
                        killed_at = time.monotonic()
                        assert group.master.process is not None
                        group.master.process.send_signal(signal.SIGKILL)
                    await asyncio.sleep(0.05)
                assert acknowledged == list(range(1, 61))

                async def promoted() -> bool:
                    return await asyncio.to_thread(group.master_port) == group.replica.port

                await until(promoted, within=30, what="the sentinels naming the replica master")
                for reader in readers:
                    seqs = [event["seq"] for event in await drain(reader, 60, within=40)]
                    assert seqs == acknowledged
                    with pytest.raises(TimeoutError):
                        await reader.next_event(0.3)

                # Presence is told again through the new master.
                await vendor.set_presence(topic, activity="setup")
                member = str(party.victor.pk)

                async def vendor_seen() -> bool:
                    return writer.presence.get(topic, {}).get(member, {}).get("activity") == "setup"

                await until(vendor_seen, within=15, what="the vendor's presence seen by the planner")

                # The florist's publish rate still counts, once the limits' breaker has closed.
                await asyncio.sleep(max(0.0, RATE_BREAKER_SECONDS + 1 - (time.monotonic() - killed_at)))
                answers = []
                for i in range(FLORIST_PER_MINUTE + 1):
                    try:
                        await florist.publish(topic, "chat.message", {"text": f"f{i}"})
                        answers.append("ok")
                    except ClientError as refused:
                        answers.append(refused.code)
                assert answers == ["ok"] * FLORIST_PER_MINUTE + ["rate_limited"]

                # Both nodes ready again, their probes asking the sentinels.
                async def both_ready() -> bool:
                    statuses = [(await asyncio.to_thread(readyz, node))[0] for node in (a, b)]
                    return statuses == [200, 200]

                await until(both_ready, within=20, what="both nodes ready after the failover")
            finally:
                for client in (writer, *readers, vendor, florist):
                    await client.close()

            # The cache and the Celery broker of a process with the nodes' settings reach the new master.
            code = (
                "from django.core.cache import cache; from wedsync.celery import app; "
                "cache.set('sentinel-check', 'ok', 30); "
                "conn = app.connection_for_write(); conn.ensure_connection(max_retries=3); "
                "print(cache.get('sentinel-check'), conn.connected); conn.release()"
            )
            assert await asyncio.to_thread(through_sentinels, nodes.environment, code) == "ok True"
