from __future__ import annotations

# The socket fixtures of the realtime tests: real ASGI application, hub stopped after each test.
from tests.realtime.conftest import _close_connections_of_the_sync_thread, sockets  # noqa: F401
