"""How sockets reach the database from the event loop.

channels' ``database_sync_to_async`` runs every call on one thread (``thread_sensitive``), so a
node's connects, subscribes and publishes queue behind each other while that thread mostly waits
on PostgreSQL round trips: in a 2,000-socket reconnect storm it was the queue every connect stood
in (py-spy: 39 % of samples on that thread, three quarters of them waiting for the database).
Calls that stand alone (one socket's read or its own transaction, nothing shared with other sync
code) go to asgiref's small thread pool instead, each thread with its own connection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def per_socket_db(func: Callable[P, R]) -> Any:
    """``database_sync_to_async`` on the thread pool, for a self-contained per-socket call."""

    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        finally:
            # Inside the call's context, where Django keeps the connection it opened: channels'
            # own clean-up runs outside it and would not see it (so CONN_MAX_AGE never applied).
            close_old_connections()

    return database_sync_to_async(call, thread_sensitive=False)
