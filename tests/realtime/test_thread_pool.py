"""A node runs its sockets' thread hops (database, presence) on a pool of the configured size."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.personas import WeddingParty

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_redis, pytest.mark.requires_postgres]


async def test_the_node_pool_has_the_configured_size(
    party: WeddingParty, sockets, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASGI_THREADS", raising=False)
    settings.REALTIME_THREAD_POOL = 7
    client = await sockets(party.priya)  # the first socket starts the node's hub
    assert (await client.subscribe(party.wedding.pk))["status"] == "ok"  # a hop on that pool
    loop = asyncio.get_running_loop()
    worker = await loop.run_in_executor(None, threading.current_thread)
    assert worker.name.startswith("node-pool")
    executor = loop._default_executor  # type: ignore[attr-defined]
    assert isinstance(executor, ThreadPoolExecutor) and executor._max_workers == 7
