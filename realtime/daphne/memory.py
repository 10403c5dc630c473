"""What a socket node keeps per open socket and per process, trimmed (decisions 0016 and 0048).

An open socket sheds what it keeps of its opening handshake, makes autobahn's send queue only
when it is used, and keeps its per-connection state in slots; the process caps its malloc arenas
before its thread pool starts.

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
    ``subprotocols`` and query string (a bearer token, a ticket) are emptied by the consumer once
    it has read them (decision 0048)."""
    request = getattr(protocol, "request", None)
    if request is not None:
        protocol.request = _OpenedRequest(getattr(request, "path", ""))
    protocol.http_request_data = b""
    protocol.http_headers = {}
    protocol.http_status_line = protocol.http_request_uri = ""
    protocol.http_request_params = {}
    protocol.websocket_protocols = []  # read once, to choose the subprotocol
    protocol.http_response_data = protocol._wskey = ""  # the 101 response we sent, the client's key
    protocol._raw_query_string = b""  # put in the scope, which the consumer empties once read (a ticket)
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


# What autobahn's server protocol, daphne's WebSocketProtocol and realtime.daphne.patches set on each
# socket besides autobahn's options (``CONFIG_ATTRS``, added by :func:`socket_slots`). A name missing
# here still works, from the instance's dict; a name here that a class defines is left out.
SOCKET_STATE_ATTRIBUTES: tuple[str, ...] = (
    # autobahn: the connection, its handshake and its state machine
    "is_closed",
    "is_open",
    "_transport_details",
    "_perMessageCompress",
    "trackedTimings",
    "trafficStats",
    "state",
    "send_state",
    "data",
    "send_queue",
    "triggered",
    "utf8validator",
    "wasMaxFramePayloadSizeExceeded",
    "wasMaxMessagePayloadSizeExceeded",
    "closedByMe",
    "failedByMe",
    "droppedByMe",
    "wasClean",
    "wasNotCleanReason",
    "wasServerConnectionDropTimeout",
    "wasOpenHandshakeTimeout",
    "wasCloseHandshakeTimeout",
    "wasServingFlashSocketPolicyFile",
    "localCloseCode",
    "localCloseReason",
    "remoteCloseCode",
    "remoteCloseReason",
    "openHandshakeTimeoutCall",
    "closeHandshakeTimeoutCall",
    "autoPingTimeoutCall",
    "autoPingPending",
    "autoPingPendingCall",
    "autoPingPendingSeq",
    "autoPingPendingSent",
    "http_request_data",
    "http_status_line",
    "http_headers",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "http_response_data",
    "websocket_version",
    "websocket_protocols",
    "websocket_origin",
    "websocket_extensions",
    "websocket_protocol_in_use",
    "websocket_extensions_in_use",
    "_wskey",
    # autobahn: frames and messages, received and sent
    "inside_message",
    "current_frame",
    "current_frame_masker",
    "_isMessageCompressed",
    "utf8validateIncomingCurrentMessage",
    "utf8validateLast",
    "message_is_binary",
    "message_data",
    "message_data_total_length",
    "frame_length",
    "frame_data",
    "control_frame_data",
    "send_compressed",
    "send_message_opcode",
    "send_message_frame_length",
    "send_message_frame_mask",
    "send_message_frame_masker",
    # daphne
    "_raw_query_string",
    "server",
    "request",
    "protocol_to_accept",
    "root_path",
    "socket_opened",
    "last_ping",
    "clean_headers",
    "client_addr",
    "server_addr",
    "client_scheme",
    "path",
    "application_deferred",
    "application_queue",
    # realtime.daphne.patches: when the client last sent a ping or a pong
    "wedsync_heard",
)


def socket_slots(protocol_class: type) -> tuple[str, ...]:
    """The names a subclass of daphne's ``protocol_class`` keeps in ``__slots__``: autobahn's
    options and :data:`SOCKET_STATE_ATTRIBUTES`, less any name a class in its MRO defines.

    Each socket's protocol otherwise keeps ~110 attributes in its ``__dict__``, a table sized for
    170 (decision 0048 has the sizes). A slot is read and written as the attribute was, and reads
    as missing until set; a class attribute of the same name would be hidden by the slot instead
    of serving as the default, hence the exclusion. The subclass's own body must not define a
    listed name either (Python refuses a slot that conflicts with a class variable).
    """
    options: tuple[str, ...] = tuple(getattr(protocol_class, "CONFIG_ATTRS", ()))
    defined = {name for klass in protocol_class.__mro__ for name in vars(klass)}
    return tuple(name for name in dict.fromkeys(options + SOCKET_STATE_ATTRIBUTES) if name not in defined)


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
