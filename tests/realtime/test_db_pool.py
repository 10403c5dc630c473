"""With Django's psycopg pool (the default with PostgreSQL), a socket's database hop borrows one of
the process's DATABASE_POOL_MAX_SIZE connections and gives it back when the hop ends."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection, connections, transaction
from prometheus_client import REGISTRY

from realtime import db as socket_db
from tests.concurrency import race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_postgres]


@pytest.fixture
def small_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """The process's pool replaced by one of ``max_size`` connections for the test."""
    wrapper: Any = connections["default"]  # the PostgreSQL wrapper, with its pool

    def resize(*, max_size: int, timeout: float = 10.0) -> Any:
        wrapper.close()
        wrapper.close_pool()
        options = dict(wrapper.settings_dict["OPTIONS"])
        options["pool"] = {**options["pool"], "min_size": 0, "max_size": max_size, "timeout": timeout}
        monkeypatch.setitem(wrapper.settings_dict, "OPTIONS", options)
        return wrapper.pool

    yield resize
    wrapper.close()
    wrapper.close_pool()  # the next use builds the pool from the restored settings


def _sleeping_backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), pg_sleep(0.2)")
        return int(cursor.fetchone()[0])


def test_the_test_settings_run_the_pool_as_production_does() -> None:
    wrapper: Any = connections["default"]
    assert wrapper.pool is not None
    assert wrapper.settings_dict["CONN_MAX_AGE"] == 0


def test_concurrent_hops_share_the_pools_connections_and_give_them_back(small_pool) -> None:
    pool = small_pool(max_size=2)
    hop = socket_db.per_socket_db(_sleeping_backend_pid).func  # the sync side, on each racing thread
    pids = race(hop, threads=8)
    assert len(set(pids)) <= 2  # eight threads, two connections
    stats = pool.get_stats()
    assert stats["pool_size"] <= 2
    assert stats["pool_available"] == stats["pool_size"]  # every hop gave its connection back
    assert stats.get("requests_waiting", 0) == 0
    # The same, as /metrics shows it.
    assert REGISTRY.get_sample_value("wedsync_db_pool_max") == 2
    assert REGISTRY.get_sample_value("wedsync_db_pool_connections", {"state": "in_use"}) == 0
    assert (REGISTRY.get_sample_value("wedsync_db_pool_wait_seconds_total") or 0) > 0  # eight hops, two connections


def test_a_connection_killed_while_idle_in_the_pool_never_fails_a_hop(small_pool) -> None:
    small_pool(max_size=1)
    hop = socket_db.per_socket_db(_sleeping_backend_pid).func
    first = hop()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [first])
    # The pool checks a connection before lending it (CONN_HEALTH_CHECKS) and replaces a dead one.
    second = hop()
    assert second != first


def test_a_hop_that_finds_no_free_connection_in_time_fails_cleanly(small_pool) -> None:
    small_pool(max_size=1, timeout=0.3)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():  # a connection is kept until the block ends
            _sleeping_backend_pid()
            holding.set()
            release.wait(10)
        connection.close()

    timeouts_before = REGISTRY.get_sample_value("wedsync_db_pool_timeouts_total") or 0
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(OperationalError):  # psycopg_pool.PoolTimeout, as Django's error
            socket_db.per_socket_db(_sleeping_backend_pid).func()
    finally:
        release.set()
        holder.join()
    assert socket_db.per_socket_db(_sleeping_backend_pid).func() > 0  # and the next one goes through
    assert REGISTRY.get_sample_value("wedsync_db_pool_timeouts_total") == timeouts_before + 1
