"""How sockets reach the database from the event loop.

channels' ``database_sync_to_async`` runs every call on one thread (``thread_sensitive``), so a
node's connects, subscribes and publishes queue behind each other while that thread mostly waits
on PostgreSQL round trips: in a reconnect storm it was the queue every connect stood in
(decision 0006).
Calls that stand alone (one socket's read or its own transaction, nothing shared with other sync
code) go to asgiref's small thread pool instead, each thread with its own connection.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import psycopg
from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError, close_old_connections, connections

P = ParamSpec("P")
R = TypeVar("R")

# Django checks a persistent connection with ``SELECT 1`` before the first query of every request
# (CONN_HEALTH_CHECKS); a hop is one socket's one or two queries, so that doubled their round trips
# (decision 0006). A connection that finished a hop without error
# this recently is trusted as it is; one idle longer is checked as Django would.
TRUST_RECENT_SECONDS = 1.0

# What a hop raises while PostgreSQL restarts or is out of reach (the pool's timeout is an
# OperationalError too): answered ``unavailable``, logged once, never a traceback to a client.
DATABASE_AWAY = (OperationalError, InterfaceError)

_last_hop = threading.local()  # Django's connections are per thread, so is when each last served


def per_socket_db(func: Callable[P, R]) -> Any:
    """``database_sync_to_async`` on the thread pool, for a self-contained per-socket call.

    Wrap once, at import, not per call: building the wrappers cost more than the hop's own
    bookkeeping (decision 0006)."""

    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        _trust_recent_health_checks()
        try:
            return func(*args, **kwargs)
        finally:
            # Inside the call's context, where Django keeps the connection it opened: channels'
            # own clean-up runs outside it and would not see it (so CONN_MAX_AGE never applied).
            close_old_connections()
            _last_hop.ended = time.monotonic()

    return database_sync_to_async(call, thread_sensitive=False)


def _trust_recent_health_checks() -> None:
    ended: float | None = getattr(_last_hop, "ended", None)
    if ended is None or time.monotonic() - ended >= TRUST_RECENT_SECONDS:
        return
    for connection in connections.all(initialized_only=True):
        # close_old_connections() closed what failed or grew old; what is still open worked just now.
        # (health_check_done is the flag Django's own check sets and close_old_connections() clears.)
        if connection.connection is not None and not connection.errors_occurred:
            connection.health_check_done = True  # type: ignore[attr-defined]


class DatabaseWatch:
    """Whether PostgreSQL is away, as this node last found it (decision 0042). A hop that failed
    with :data:`DATABASE_AWAY` (PostgreSQL restarting, out of reach, or only the pool out of
    connections) sets a thread trying a fresh connection outside the pool, at once and then every
    PROBE_SECONDS: while those fail the database is away, and the socket ops that need it are
    answered ``unavailable`` at once rather than each waiting out the pool's timeout. A busy pool
    whose database answers is never taken for an outage. Thread-safe: the socket loop, HTTP
    threads and ``/readyz`` share it."""

    PROBE_SECONDS = 0.5
    PROBE_CONNECT_TIMEOUT = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._away = False
        self._prober: threading.Thread | None = None

    @property
    def away(self) -> bool:
        return self._away

    def failed(self) -> None:
        """A hop failed for want of the database: find out whether it is away, until it is back.
        Only PostgreSQL is watched: the embedded profile's SQLite has no server to be away (its
        "database is locked" passes by itself)."""
        if connections["default"].vendor != "postgresql":
            return
        with self._lock:
            if self._prober is None:
                self._prober = threading.Thread(target=self._probe_until_back, name="database-watch", daemon=True)
                self._prober.start()

    def _probe_until_back(self) -> None:
        try:
            while not database_answers(connect_timeout=self.PROBE_CONNECT_TIMEOUT):
                self._away = True
                time.sleep(self.PROBE_SECONDS)
        finally:  # whatever ends the probing, the next failure starts it again
            with self._lock:
                self._away, self._prober = False, None


def database_answers(*, connect_timeout: float) -> bool:
    """A fresh connection (not the pool's, whose wait is the point of asking) answers ``SELECT 1``."""
    try:
        params = connections["default"].get_connection_params()
        for pooled_only in ("pool", "cursor_factory", "context"):
            params.pop(pooled_only, None)
        params["connect_timeout"] = max(1, round(connect_timeout))  # over DATABASE_URL's own, if it has one
        with psycopg.connect(**params) as probe:
            probe.execute("SELECT 1")
    except Exception:  # any failure to connect and answer is "not back yet"
        return False
    return True
