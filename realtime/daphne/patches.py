"""What daphne needs to speak PROTOCOL.md exactly (docs/decisions/0003-daphne-integration.md).

Stock daphne 4.2 cannot send close codes 1001 or 1009 through ASGI (autobahn's ``sendClose``
accepts only 1000 and 3000-4999), drops an over-long frame with a TCP reset instead of a close
frame, buffers writes without limit and never tells the app, and closes sockets on SIGTERM with
no close frame at all; it also drops an application's empty message (its ``handle_reply`` tests
``text``/``bytes`` for truth). This module, installed from ``wedsync/asgi.py`` before daphne starts
its server, fixes those at the protocol level:

- frames and messages over ``REALTIME_MAX_FRAME`` are refused from their header, before the
  payload is buffered: an ``error``/``too_large`` frame, then close 1009;
- the app may close with any code of the protocol (1001, 1003, 1009, 4xxx);
- :func:`realtime.daphne.transport.write_gate_for` exposes the transport's flow control to the
  consumer, so a slow reader fills the consumer's bounded queue (and is cut off with 4008)
  instead of daphne's memory;
- SIGTERM/SIGINT close every socket with 1001, let consumers run their disconnect, then stop;
- an empty text or binary message is sent as an empty frame (RFC 6455 allows it; Autobahn cases
  1.1.1, 1.2.1, 6.1.1 and 6.1.2 echo one), not dropped;
- an HTTP POST's body is not parsed as a form by Twisted, since daphne hands the raw body to Django.
- a WebSocket handshake's HTTP request and channel are unlinked once the socket is handed over, so
  they are freed without the cyclic collector (decision 0047).

It leans on daphne, autobahn and Twisted internals, so :func:`install` refuses a release of any of
them that it was not verified against (:data:`VERIFIED_VERSIONS`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import pprint
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

from realtime.daphne.inbox import AppInbox, InboxBounds
from realtime.daphne.memory import _shed_handshake, malloc_arenas_cap, socket_slots
from realtime.daphne.transport import send_websocket_message
from realtime.walks import slice_gap, sweep_in_slices

logger = structlog.get_logger(__name__)
daphne_logger = logging.getLogger("daphne.server")  # what daphne's own checks log to

DRAIN_GRACE_SECONDS = 10.0
CLOSE_HANDSHAKE_SECONDS = 15.0
TIMEOUT_CHECK_SECONDS = 2.0  # daphne's period for its timeout and ping check
TIMEOUT_SWEEP_SECONDS = 1.5  # how long one such check takes to walk a big node's connections
_installed = False
# The releases whose internals these patches were read against and tested with: the ones
# requirements.lock pins (decision 0003). A new one is added once its source is read again against
# this module and tests/realtime pass on it.
KNOWN_DAPHNE_VERSIONS = frozenset({"4.2.3"})
VERIFIED_VERSIONS: dict[str, frozenset[str]] = {
    "daphne": KNOWN_DAPHNE_VERSIONS,
    "autobahn": frozenset({"26.11.1"}),
    "twisted": frozenset({"26.10.0"}),
}


class UnverifiedVersionError(RuntimeError):
    """A package these patches reach into is at a release they were not verified against."""


def require_verified(package: str, version: str) -> None:
    """Stop start-up loudly on a release of ``package`` whose internals the patches were not checked against."""
    verified = ", ".join(sorted(VERIFIED_VERSIONS[package]))
    if version not in VERIFIED_VERSIONS[package]:
        raise UnverifiedVersionError(
            f"realtime.daphne.patches patches {package} internals and knows {package} {verified}, not {version}: "
            f"read the new {package}'s source against realtime/daphne/patches.py, "
            "then add its version to VERIFIED_VERSIONS"
        )


def require_known_daphne(version: str) -> None:
    require_verified("daphne", version)


def found_versions() -> dict[str, str]:
    """The releases of the patched packages this process runs on."""
    import autobahn
    import daphne
    import twisted

    autobahn_package: Any = autobahn  # re-exports its version without declaring it
    return {"daphne": daphne.__version__, "autobahn": autobahn_package.__version__, "twisted": twisted.__version__}


def installed() -> bool:
    """Whether this process is a daphne node with these patches (so it serves sockets)."""
    return _installed


def install(*, on_running: Callable[[], object] | None = None) -> None:
    """Patch daphne's WebSocket factory and signal handling, and cap the process's malloc arenas;
    ``on_running`` is called on the event loop once the server runs (to start the node's hub).
    Idempotent; a no-op without daphne."""
    global _installed
    if _installed or "daphne.cli" not in sys.modules:  # only inside `python -m daphne`
        return
    try:
        versions = found_versions()
    except ImportError:  # pragma: no cover - daphne is a dependency, but the app also runs elsewhere
        return
    for package, version in versions.items():  # before anything is patched
        require_verified(package, version)
    import daphne.cli
    import daphne.http_protocol
    import daphne.server
    from autobahn.websocket import protocol as autobahn_protocol
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    from django.conf import settings
    from twisted.internet import reactor as twisted_reactor

    reactor: Any = twisted_reactor
    # Before the node's thread pool starts (glibc ignores the cap once more arenas exist).
    if settings.REALTIME_MALLOC_ARENAS and not malloc_arenas_cap(arenas=settings.REALTIME_MALLOC_ARENAS):
        logger.warning("malloc.arenas_not_capped", arenas=settings.REALTIME_MALLOC_ARENAS)

    daphne.server.WebSocketFactory = websocket_factory(
        WebSocketFactory, WebSocketProtocol, max_frame=settings.REALTIME_MAX_FRAME
    )
    patch_lean_inbox(
        daphne.server.Server,
        InboxBounds(frames=settings.REALTIME_INBOX_MAX_FRAMES, bytes=settings.REALTIME_INBOX_MAX_BYTES),
    )
    patch_listen_backlog(daphne.cli, settings.REALTIME_LISTEN_BACKLOG)
    patch_drain(daphne.server.Server, WebSocketProtocol, reactor)
    patch_handshake_timeout(daphne.server.Server, settings.REALTIME_HANDSHAKE_TIMEOUT)
    patch_sliced_checks(daphne.server.Server, reactor)
    patch_lazy_autobahn_pformat(autobahn_protocol)
    patch_no_form_parsing(daphne.http_protocol)
    patch_upgraded_request_release(daphne.http_protocol, reactor)
    if on_running is not None:
        # callWhenRunning runs during the reactor's start-up, before its asyncio loop runs: the
        # loop's first turn is the earliest the hub can start on it.
        reactor.callWhenRunning(lambda: reactor.callLater(0, on_running))
    _installed = True


def websocket_factory(factory_class: Any, protocol_class: Any, *, max_frame: int) -> Any:
    """daphne's WebSocket factory, making protocols that speak PROTOCOL.md (see the module's docstring)."""

    class ProtocolV1(protocol_class):  # type: ignore[misc]
        __slots__ = socket_slots(protocol_class)

        def _max_message_size_exceeded(self, size: int, limit: int, reason: str) -> None:
            if self.state == self.STATE_OPEN:
                message = {"op": "error", "code": "too_large", "message": f"Frames are limited to {limit} bytes."}
                self.sendMessage(json.dumps(message).encode(), False)
            self._fail_connection(self.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG, "frame too large")

        # A WebSocket ping from the client, or its pong to daphne's pings, is a sign of life like
        # any frame (PROTOCOL.md section 3): presence reads it through heard_at().
        def onPing(self, payload: bytes) -> None:
            self.wedsync_heard = time.time()
            super().onPing(payload)

        def onPong(self, payload: bytes) -> None:
            self.wedsync_heard = time.time()
            super().onPong(payload)

        def onOpen(self) -> None:
            super().onOpen()
            _shed_handshake(self)

        def serverClose(self, code: int | None = None, reason: str | None = None) -> None:
            if self.state != self.STATE_OPEN:
                return
            self.sendCloseFrame(code=code or 1000, reasonUtf8=(reason or "").encode()[:123] or None)

        def handle_reply(self, message: dict[str, Any]) -> None:
            if message.get("type") == "websocket.send":
                send_websocket_message(self, message)
            else:
                super().handle_reply(message)

    class FactoryV1(factory_class):  # type: ignore[misc]
        protocol = ProtocolV1

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # A close frame, not a TCP reset, when we fail a connection (1009 must reach the client),
            # and time for a slow reader to get through what was queued before it (4008).
            self.setProtocolOptions(failByDrop=False, closeHandshakeTimeout=CLOSE_HANDSHAKE_SECONDS)

        def setProtocolOptions(self, **options: Any) -> None:
            # daphne passes its 1 MiB defaults (or CLI values); never accept more than the protocol's.
            for key in ("maxFramePayloadSize", "maxMessagePayloadSize"):
                if key in options:
                    options[key] = min(options[key] or max_frame, max_frame)
            super().setProtocolOptions(**options)

    return FactoryV1


def patch_listen_backlog(daphne_cli: Any, backlog: int) -> None:
    """Listen with a deeper accept queue than Twisted's default of 50, which a reconnect storm
    overflows, leaving phones to wait for the kernel's SYN retransmits (decision 0006).

    daphne loads the application before it builds its endpoint strings, so its CLI's builder can
    still be wrapped here; an endpoint the operator wrote with ``-e`` and a ``backlog=`` of its
    own is left as it is.
    """
    build = daphne_cli.build_endpoint_description_strings

    def with_backlog(*args: Any, **kwargs: Any) -> list[str]:
        return [
            f"{description}:backlog={backlog}"
            if description.startswith(("tcp:", "unix:")) and "backlog=" not in description
            else description
            for description in build(*args, **kwargs)
        ]

    daphne_cli.build_endpoint_description_strings = with_backlog


def patch_lean_inbox(server_class: Any, bounds: InboxBounds) -> None:
    original = server_class.create_application

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") != "websocket":
            return original(self, protocol, scope)
        if "application_instance" in self.connections[protocol]:
            raise RuntimeError("an application exists already for this connection")
        inbox = AppInbox(protocol, bounds)
        scope.setdefault("asgi", {"version": "3.0"})
        instance = self.application(scope=scope, receive=inbox.get, send=functools.partial(self.handle_reply, protocol))
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(instance)
        return inbox

    server_class.create_application = create_application


def patch_handshake_timeout(server_class: Any, seconds: int) -> None:
    """At least ``seconds`` from the upgrade request to the app's accept: daphne rejects (403) a
    socket its app has not accepted within ``--websocket_connect_timeout`` (5 s by default) and
    autobahn drops one whose handshake is not done by then, losing the work already done for it;
    a reconnect storm's queued handshakes came back to queue again. A longer CLI value, or one of
    0 or less (no limit), stands."""
    original_run = server_class.run

    def run(self: Any) -> Any:
        for name in ("websocket_connect_timeout", "websocket_handshake_timeout"):
            current = getattr(self, name)
            if current > 0:
                setattr(self, name, max(current, seconds))
        return original_run(self)

    server_class.run = run


def patch_sliced_checks(server_class: Any, reactor: Any) -> None:
    """daphne's two periodic checks walk every connection in one reactor callback, holding a big
    node's loop long enough to delay every delivery due meanwhile (decision 0013). Here each walks
    its connections :data:`~realtime.walks.WALK_SLICE` at a time, a loop turn between slices, on
    the same periods (daphne schedules the first run of each; each run schedules the next when it
    is done). The timeout check, which sends the pings, spaces its slices over most of its period."""

    def call_soon(callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)  # the reactor runs on this asyncio loop

    def timeout_checker(self: Any) -> None:
        def check(protocol: Any) -> None:
            if protocol in self.connections:  # not gone since the walk started
                protocol.check_timeouts()

        # This walk sends the pings that are due: spread over most of the period they are a steady
        # trickle, where a burst of them and of their pongs held every delivery due (decision 0015).
        connections = list(self.connections)
        gap = slice_gap(len(connections), spread=TIMEOUT_SWEEP_SECONDS)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        sweep_in_slices(
            connections,
            check,
            call_soon=lambda callback: loop.call_later(gap, callback),
            then=lambda: reactor.callLater(
                max(TIMEOUT_CHECK_SECONDS - (time.monotonic() - started), 0.1), self.timeout_checker
            ),
            name="daphne.timeout_checker",
        )

    def application_checker(self: Any) -> None:
        sweep_in_slices(
            list(self.connections),
            functools.partial(_application_check, self),
            call_soon=call_soon,
            then=lambda: reactor.callLater(1, self.application_checker),
            name="daphne.application_checker",
        )

    server_class.timeout_checker = timeout_checker
    server_class.application_checker = application_checker


def _application_check(server: Any, protocol: Any) -> None:
    """daphne 4.2's ``Server.application_checker`` for one connection (the loop's body, unchanged):
    cancel an application that outlived its disconnect by ``application_close_timeout``, reap a
    finished one (logging its exception), and forget a connection once both are gone."""
    details = server.connections.get(protocol)
    if details is None:
        return
    disconnected = details.get("disconnected", None)
    application_instance = details.get("application_instance", None)
    overdue = disconnected and time.time() - disconnected > server.application_close_timeout
    if overdue and application_instance and not application_instance.done():
        daphne_logger.warning(
            "Application instance %r for connection %s took too long to shut down and was killed.",
            application_instance,
            repr(protocol),
        )
        application_instance.cancel()
    if application_instance and application_instance.done():
        try:
            exception = application_instance.exception()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            pass
        else:
            if exception:
                if isinstance(exception, KeyboardInterrupt):
                    server.stop()  # the protocol asks the server to exit
                else:
                    daphne_logger.error("Exception inside application: %s", exception, exc_info=exception)
                    if not disconnected:
                        protocol.handle_exception(exception)
        del server.connections[protocol]["application_instance"]
        application_instance = None
    if not application_instance and disconnected:
        del server.connections[protocol]


def patch_drain(server_class: Any, protocol_class: type, reactor: Any) -> None:
    def open_sockets(server: Any) -> list[Any]:
        return [
            protocol
            for protocol, details in list(server.connections.items())
            if isinstance(protocol, protocol_class)
            and details.get("application_instance") is not None
            and not details["application_instance"].done()
        ]

    def drain() -> None:
        servers = [server for server in _servers if server is not None]
        sockets = [protocol for server in servers for protocol in open_sockets(server)]
        logger.info("drain.start", sockets=len(sockets))
        for protocol in sockets:
            if protocol.state == protocol.STATE_OPEN:
                protocol.sendCloseFrame(code=1001, reasonUtf8=b"node shutting down")
        deadline = time.monotonic() + DRAIN_GRACE_SECONDS

        def wait_then_stop() -> None:
            remaining = [protocol for server in servers for protocol in open_sockets(server)]
            if not remaining or time.monotonic() > deadline:
                logger.info("drain.done", remaining=len(remaining))
                reactor.stop()
            else:
                reactor.callLater(0.05, wait_then_stop)

        wait_then_stop()

    def on_signal(*_args: Any) -> None:
        reactor.callFromThread(drain)

    def install_handlers() -> None:
        # After Twisted installed its own handlers, which stop at once without close frames.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    _servers: list[Any] = []
    original_run = server_class.run

    def run(self: Any) -> Any:
        _servers.append(self)
        return original_run(self)

    server_class.run = run
    reactor.callWhenRunning(install_handlers)


class _PrettyLater:
    """``pprint.pformat(value)``, computed only if a log line that shows it is actually written."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return pprint.pformat(self._value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def patch_lazy_autobahn_pformat(autobahn_protocol: Any) -> None:
    """Stop autobahn pretty-printing its options for every connection when nobody reads them.

    ``WebSocketProtocol._connectionMade`` (autobahn 26) calls ``self.log.debug(..., attrs=
    pformat(configAttrLog))`` on every connection: the arguments are built whether or not debug
    logging is on, and pretty-printing some forty options was a visible part of a connect's CPU
    (decision 0006). The module's ``pformat`` becomes one that formats when the line is rendered (the logger formats
    its arguments with ``str.format``), so debug output is unchanged. ``Timings.__str__``, the
    module's only other user, must return a real string and keeps the eager one. If autobahn
    stops importing ``pformat`` this way, nothing is patched.
    """
    if getattr(autobahn_protocol, "pformat", None) is not pprint.pformat:
        return
    autobahn_protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)
    autobahn_protocol.pformat = _PrettyLater


def patch_no_form_parsing(http_protocol: Any) -> None:
    """Stop Twisted parsing every POST as a form that nobody reads.

    Twisted's ``Request.requestReceived`` parses a POST's Content-Type through the ``email``
    package and then a urlencoded or multipart body into ``request.args``; daphne never reads
    ``args`` (it hands the raw body to the ASGI application, and Django parses it), and a
    multipart body Twisted cannot read gets its own bare 400 before Django hears of it (decision
    0033). Twisted's own switch, ``parsePOSTFormSubmission``, turns it off; daphne's
    ``HTTPFactory.buildProtocol`` builds its requests from the module's ``WebRequest``, which
    becomes a subclass passing it.
    """
    base = http_protocol.WebRequest

    class WebRequestWithoutFormParsing(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("parsePOSTFormSubmission", False)
            super().__init__(*args, **kwargs)

    http_protocol.WebRequest = WebRequestWithoutFormParsing


def patch_upgraded_request_release(http_protocol: Any, reactor: Any) -> None:
    """Unlink a WebSocket handshake's HTTP request from its channel once the socket is handed over.

    daphne's ``WebRequest.process`` hands the TCP transport to a WebSocket protocol and leaves the
    request and its Twisted ``HTTPChannel`` pointing at each other (``request.channel``,
    ``channel.requests``): a reference cycle, with both header sets, both addresses and the body
    buffer hanging off it, that only the cyclic collector frees, and a reconnect storm made
    thousands of them (decision 0047). Once the handshake's call stack has unwound (the next
    reactor turn) the two are unlinked, so reference counting frees them as soon as daphne's
    connection list and the transport (the channel is its producer until the socket is accepted)
    let go. Only a request that came with a transport and gave it away is touched: an HTTP/2
    stream's requests have none from the start.
    """
    base = http_protocol.WebRequest

    class UpgradedRequestReleased(base):  # type: ignore[misc, valid-type]
        def process(self) -> Any:
            had_transport = self.transport is not None
            processed = super().process()
            # getattr: a request finished by an error after the hand-over has no channel left.
            if had_transport and self.transport is None and getattr(self, "channel", None) is not None:
                reactor.callLater(0, _release_upgraded_request, self)
            return processed

    http_protocol.WebRequest = UpgradedRequestReleased


def _release_upgraded_request(request: Any) -> None:
    channel, request.channel = getattr(request, "channel", None), None
    requests = getattr(channel, "requests", None)
    if requests is not None and request in requests:
        requests.remove(request)
