"""What a socket node keeps per open socket and per process, trimmed (decision 0016).

An open socket sheds what it keeps of its opening handshake and makes autobahn's send queue only
when it is used; the process caps its malloc arenas before its thread pool starts.

Malloc arenas: glibc gives each new thread that allocates an arena of its own, up to eight per core, and only
shares arenas past that limit. A node runs its sockets' database and presence calls on a pool of
threads (``REALTIME_THREAD_POOL``), which allocate query rows, decoded JSON and frames above
pymalloc's 512 bytes. What one arena frees is not reused by the others, so the process keeps
each arena's high-water mark. Python's own small objects do not use these arenas (pymalloc maps
its own). The GIL serialises most of the threads' allocations; C code that runs without it
(libpq, for one) may wait for a shared arena's lock, which is the cap's cost (decision 0016).
"""

from __future__ import annotations

import collections
import ctypes
import sys
from typing import Any


class _OpenedRequest:
    """What daphne still reads of a socket's opening request once it is open: its path (logs)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def _shed_handshake(protocol: Any) -> None:
    """Drop what an open socket keeps of its opening handshake for the rest of its life: autobahn's
    raw request bytes, request line, header dict and offered subprotocols, its request object and
    daphne's header list (cookies included). The ASGI scope shares that list; the app reads
    headers only before it accepts (``RealtimeConsumer.websocket_connect``), so emptying it in
    place frees them for every holder of the scope (decision 0016 has the saving). The scope's
    ``subprotocols`` and query string (a bearer token, a ticket) stay: they are small, and the
    scope is not ours to rebuild."""
    request = getattr(protocol, "request", None)
    if request is not None:
        protocol.request = _OpenedRequest(getattr(request, "path", ""))
    protocol.http_request_data = b""
    protocol.http_headers = {}
    protocol.http_status_line = protocol.http_request_uri = ""
    protocol.http_request_params = {}
    protocol.websocket_protocols = []  # read once, to choose the subprotocol
    protocol.http_response_data = protocol._wskey = ""  # the 101 response we sent, the client's key
    if not getattr(protocol, "send_queue", None):
        protocol.send_queue = LazySendQueue()
    headers = getattr(protocol, "clean_headers", None)
    if isinstance(headers, list):
        headers.clear()


class LazySendQueue:
    """autobahn's per-socket send queue, a ``deque`` (decision 0016 has its size) that only
    chopped or synchronous sends use, and daphne makes neither: made on the first such send."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    def append(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)

    def popleft(self) -> Any:
        if self._items is None:
            raise IndexError("pop from an empty send queue")
        return self._items.popleft()


# <malloc.h>: mallopt's parameter for the arena limit.
M_ARENA_MAX = -8


def malloc_arenas_cap(*, arenas: int) -> bool:
    """Limit the process to ``arenas`` malloc arenas (0 leaves the C library's default).

    True when the C library took the limit; False on one without glibc's ``mallopt`` (musl,
    macOS), where the call does nothing. Arenas that exist already stay; call it before the
    threads start.
    """
    if arenas <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
