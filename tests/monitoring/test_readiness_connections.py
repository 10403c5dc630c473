"""/readyz asks Redis over a small pool kept per process: hits do not open a connection each."""

from __future__ import annotations

import pytest
import redis
from django.test import Client, override_settings

from tests.concurrency import race
from tests.servers import redis_server

pytestmark = [pytest.mark.django_db, pytest.mark.requires_postgres]


def test_repeated_and_concurrent_probes_reuse_the_processs_connections() -> None:
    with redis_server() as server:
        layer = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": server.url}]},
            }
        }
        watcher = redis.Redis.from_url(server.url)  # one connection of its own, counted below
        opened_before = watcher.info("stats")["total_connections_received"]
        with override_settings(CHANNEL_LAYERS=layer):
            assert {Client().get("/readyz").status_code for _ in range(30)} == {200}
            assert set(race(lambda: Client().get("/readyz").status_code, threads=8)) == {200}
        opened = watcher.info("stats")["total_connections_received"] - opened_before
        connected = watcher.info("clients")["connected_clients"] - 1
        watcher.close()
    # 38 probes, at most the probe pool's two connections ever opened (it was one per probe).
    assert 1 <= opened <= 2
    assert connected <= 2
