"""The real ASGI application's sockets for the records tests, and the autouse fixture that closes the
database connections their sync thread opened (else the test database cannot be dropped)."""

from tests.realtime.conftest import (
    _close_connections_of_the_sync_thread as _close_connections_of_the_sync_thread,
)
from tests.realtime.conftest import sockets as sockets
