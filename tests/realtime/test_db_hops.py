"""Without the pool (DATABASE_POOL_MAX_SIZE=0), a socket's database hop skips Django's ``SELECT 1``
on a connection that served a hop just now, checks one that sat idle, and recovers on its own from a
connection that died in between."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from django.db import OperationalError, connection, connections

from realtime import db as socket_db

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_postgres]


@dataclass
class Hop:
    """One socket hop on this thread (the sync side of ``per_socket_db``), answering its backend's
    pid; ``checks`` has an entry for each health check the hops ran."""

    run: Callable[[], int]
    checks: list[bool] = field(default_factory=list)

    def __call__(self) -> int:
        return self.run()


@pytest.fixture
def hop(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hop]:
    monkeypatch.setattr(socket_db, "_last_hop", threading.local())
    wrapper = connections["default"]
    wrapper.close()
    # As the product runs without its pool (DATABASE_POOL_MAX_SIZE=0; test_db_pool.py has the pool).
    options = {name: value for name, value in wrapper.settings_dict["OPTIONS"].items() if name != "pool"}
    monkeypatch.setitem(wrapper.settings_dict, "OPTIONS", options)
    monkeypatch.setitem(wrapper.settings_dict, "CONN_MAX_AGE", 60)
    monkeypatch.setitem(wrapper.settings_dict, "CONN_HEALTH_CHECKS", True)
    real_is_usable = wrapper.is_usable

    def counted_is_usable() -> bool:
        one_hop.checks.append(True)
        return real_is_usable()

    monkeypatch.setattr(wrapper, "is_usable", counted_is_usable)

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    one_hop = Hop(run=socket_db.per_socket_db(backend_pid).func)
    yield one_hop
    wrapper.close()  # not kept open past the test's own settings


def test_back_to_back_hops_skip_the_check_and_an_idle_connection_is_checked(
    hop: Hop, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = hop()  # opens the connection: nothing to check
    assert hop() == first  # the same connection, trusted: it worked a moment ago
    assert hop.checks == []

    monkeypatch.setattr(socket_db, "TRUST_RECENT_SECONDS", 0.0)  # every connection now counts as idle
    assert hop() == first
    assert hop.checks == [True]


def test_a_connection_killed_between_hops_fails_one_hop_then_is_replaced(hop: Hop) -> None:
    first = hop()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [first])
    # The price of trusting a connection for a second: a hop that starts on it within that second
    # fails (the consumer answers server_error; a connect is retried by the client) ...
    with pytest.raises(OperationalError):
        hop()
    # ... and the hop's clean-up closed it, so the next hop opens a new one.
    second = hop()
    assert second != first
