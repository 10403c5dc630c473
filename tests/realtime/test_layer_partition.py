"""A Redis that stops answering (SIGSTOP: a partition, not a refused connection) under a real node:
publishes are still answered, the node's thread pool does not fill, and once Redis is back every
event reaches its subscribers exactly once (issue 16, item 8)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from realtime.client import RealtimeClient
from tests.personas import WeddingParty
from tests.realtime.nodes import cluster
from tests.realtime.test_nodes import client_for, drain
from wedsync.settings import REALTIME_DEVICE_LIMITS

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]


async def test_publishes_are_answered_while_redis_is_partitioned(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path, count=1) as nodes:
        node, redis = nodes.nodes[0], nodes.redis
        topic = f"wedding:{party.wedding.pk}"
        # One socket answers its frames in order, so the load comes from many: every device the
        # couple, the planner and the vendors may have, more sockets than the node's 24 threads.
        members = [member for member in party.members if member.role != "guest"]
        publishers: list[RealtimeClient] = []
        guest = await client_for(party.gil, node.url)
        try:
            for member in members:
                for _ in range(REALTIME_DEVICE_LIMITS[member.role]):
                    publishers.append(await client_for(member, node.url, request_timeout=20))
            assert len(publishers) > 24
            for client in (guest, *publishers):
                await client.subscribe(topic)
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                replies = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            client.request("publish", topic=topic, type="chat.message", data={"text": f"m{i}"})
                            for i, client in enumerate(publishers)
                        )
                    ),
                    timeout=15,  # the layer's socket timeout is 30 s: waiting on it would take that
                )
                await asyncio.sleep(6)  # past realtime.layer_send's 5 s: the node gives the sends up
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
            assert sorted(reply["seq"] for reply in replies) == list(range(1, len(publishers) + 1))
            # The fan-out was given up (Redis did not answer in time): what the node did not take
            # straight from its own commits (realtime.node.local: only the next in line), the feed
            # reads back from the log; each once, in order.
            events = await drain(guest, len(publishers), within=40)
            assert [event["seq"] for event in events] == list(range(1, len(publishers) + 1))
            assert "layer.send_dropped" in node.log()
        finally:
            for client in (guest, *publishers):
                await client.close()
