"""Every seam realtime.daphne.patches changes: that install() patches it on the real packages, and
that each wrapper does what it is for, applied to a stand-in of the class or module it patches.

What the wrappers do on a serving node is covered cross-process elsewhere: the protocol's close
codes, ``too_large`` and 1009 (tests/realtime/test_nodes.py, test_socket_protocol.py), pings
heard (test_daphne_pings.py), empty messages (test_daphne_replies.py), handshake shedding
(test_daphne_handshake.py), the lean inbox (test_inbox_nodes.py), the drain on SIGTERM and the
handshake timeout (test_nodes.py) and the sliced checks (test_walks.py, test_daphne_pings.py); a
POST's body left to Django is tested here on a real node.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import pprint
import re
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import autobahn
import daphne
import pytest
import twisted
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.task import Clock

from realtime.daphne import patches
from realtime.daphne.inbox import AppInbox, InboxBounds
from tests.realtime.nodes import ROOT, Node, echo_node, echo_node_environment
from tests.servers import free_port

PATCHES = "realtime.daphne.patches"
# (module, attribute path) of every seam install() patches.
SEAMS = [
    ("daphne.server", "WebSocketFactory"),
    ("daphne.server", "Server.create_application"),
    ("daphne.server", "Server.run"),
    ("daphne.server", "Server.timeout_checker"),
    ("daphne.server", "Server.application_checker"),
    ("daphne.cli", "build_endpoint_description_strings"),
    ("autobahn.websocket.protocol", "pformat"),
    ("autobahn.websocket.protocol", "Timings.__str__"),
    ("daphne.http_protocol", "WebRequest"),
    ("daphne.http_protocol", "WebRequest.process"),
]
# Run in a fresh interpreter, as `python -m daphne` would: install() patches process-wide.
INSTALL_SCRIPT = """
import functools, importlib, json, sys
import daphne.cli
from realtime.daphne import patches
seams = json.loads(sys.argv[1])
def owner(module, path):
    return functools.reduce(getattr, path.split("."), importlib.import_module(module)).__module__
before = [owner(module, path) for module, path in seams]
patches.install()
after = [owner(module, path) for module, path in seams]
print(json.dumps({"before": before, "after": after, "installed": patches.installed()}))
"""


@pytest.fixture(scope="module")
def installed_seams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    var_dir = tmp_path_factory.mktemp("install-var")
    result = subprocess.run(
        [sys.executable, "-c", INSTALL_SCRIPT, json.dumps(SEAMS)],
        cwd=ROOT,
        env=echo_node_environment(var_dir=var_dir, max_frame=64 * 1024),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(("index", "seam"), list(enumerate(SEAMS)), ids=[".".join(seam) for seam in SEAMS])
def test_install_patches_the_seam_on_the_real_packages(
    installed_seams: dict[str, Any], index: int, seam: tuple[str, str]
) -> None:
    assert installed_seams["installed"]
    assert installed_seams["before"][index] != PATCHES
    assert installed_seams["after"][index] == PATCHES, seam


def test_the_verified_releases_are_the_ones_requirements_lock_pins() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^(daphne|autobahn|twisted)(?:\[[^\]]*\])?==(\S+)", lock, re.MULTILINE))
    assert {package: {version} for package, version in pinned.items()} == {
        package: set(versions) for package, versions in patches.VERIFIED_VERSIONS.items()
    }
    assert patches.found_versions() == pinned  # the environment runs what the lock pins


@pytest.mark.parametrize(("package", "module"), [("daphne", daphne), ("autobahn", autobahn), ("twisted", twisted)])
def test_install_refuses_an_unverified_release_before_patching_anything(
    monkeypatch: pytest.MonkeyPatch, package: str, module: types.ModuleType
) -> None:
    monkeypatch.setitem(sys.modules, "daphne.cli", types.ModuleType("daphne.cli"))  # as under `python -m daphne`
    monkeypatch.setattr(module, "__version__", "99.0.0")
    verified = ", ".join(sorted(patches.VERIFIED_VERSIONS[package]))

    with pytest.raises(patches.UnverifiedVersionError) as refused:
        patches.install()

    assert f"knows {package} {verified}, not 99.0.0" in str(refused.value)
    assert not patches.installed()


def _factory(max_frame: int) -> Any:
    factory_class = patches.websocket_factory(WebSocketFactory, WebSocketProtocol, max_frame=max_frame)
    return factory_class(None, server="Daphne", reactor=Clock())


def test_the_websocket_factory_caps_frames_and_closes_with_a_frame() -> None:
    factory = _factory(max_frame=64 * 1024)
    factory.setProtocolOptions(maxFramePayloadSize=1024 * 1024, maxMessagePayloadSize=0)  # daphne's, 0 = no limit

    assert issubclass(factory.protocol, WebSocketProtocol)
    assert (factory.maxFramePayloadSize, factory.maxMessagePayloadSize) == (64 * 1024, 64 * 1024)
    assert factory.failByDrop is False
    assert factory.closeHandshakeTimeout == patches.CLOSE_HANDSHAKE_SECONDS
    factory.setProtocolOptions(maxFramePayloadSize=1000)  # a smaller CLI value stands
    assert factory.maxFramePayloadSize == 1000


def _open_protocol(protocol_class: type) -> Any:
    protocol = protocol_class()
    protocol.state = protocol.STATE_OPEN
    protocol.closes, protocol.sent = [], []
    protocol.sendCloseFrame = lambda code, reasonUtf8: protocol.closes.append((code, reasonUtf8))
    protocol.serverSend = lambda content, binary: protocol.sent.append((content, binary))
    return protocol


def test_the_websocket_protocol_closes_with_any_protocol_code_and_sends_empty_messages() -> None:
    protocol = _open_protocol(_factory(max_frame=1024).protocol)

    protocol.serverClose(code=1001, reason="node shutting down")  # autobahn's sendClose refuses 1001
    protocol.handle_reply({"type": "websocket.send", "text": ""})  # daphne's drops it

    assert protocol.closes == [(1001, b"node shutting down")]
    assert protocol.sent == [("", False)]


def test_listen_backlog_is_added_to_endpoints_without_one() -> None:
    endpoints = ["tcp:port=80:interface=0", "unix:/run/s", "tcp:port=1:backlog=9"]
    cli = SimpleNamespace(build_endpoint_description_strings=lambda **_: endpoints)
    patches.patch_listen_backlog(cli, 321)

    assert cli.build_endpoint_description_strings() == [
        "tcp:port=80:interface=0:backlog=321",
        "unix:/run/s:backlog=321",
        "tcp:port=1:backlog=9",  # the operator's own stands
    ]


def test_a_real_node_listens_with_the_configured_backlog(tmp_path: Path) -> None:
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read a listening socket's backlog")
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    node = Node(name="backlog", port=free_port(), log_path=tmp_path / "node.log")
    try:
        node.start({**echo_node_environment(var_dir=var_dir, max_frame=64 * 1024), "REALTIME_LISTEN_BACKLOG": "321"})
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{node.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
    finally:
        node.stop()
    assert listening[:3] == ["LISTEN", "0", "321"]  # Send-Q of a listening socket is its backlog


class _Server:
    """A stand-in for daphne's ``Server``: the attributes the wrappers read, and a recorded run."""

    def __init__(self) -> None:
        self.connections: dict[Any, dict[str, Any]] = {}
        self.runs = 0
        self.websocket_connect_timeout = self.websocket_handshake_timeout = 5
        self.application_close_timeout = 10

    def run(self) -> None:
        self.runs += 1

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> str:
        return "stock queue"

    def handle_reply(self, protocol: Any, message: dict[str, Any]) -> None:
        pass


async def test_the_lean_inbox_is_handed_to_websocket_applications_only() -> None:
    server_class = type("Server", (_Server,), {})
    bounds = InboxBounds(frames=10, bytes=1000)
    patches.patch_lean_inbox(server_class, bounds)
    started: list[dict[str, Any]] = []

    async def application(*, scope: dict[str, Any], receive: Callable[[], Any], send: Any) -> None:
        started.append({"scope": scope, "message": await receive()})

    server = server_class()
    server.application = application
    server.connections["socket"] = {}

    inbox = server.create_application("socket", {"type": "websocket"})
    inbox.put_nowait({"type": "websocket.connect"})
    await server.connections["socket"]["application_instance"]

    assert isinstance(inbox, AppInbox) and inbox._bounds == bounds
    assert started == [
        {"scope": {"type": "websocket", "asgi": {"version": "3.0"}}, "message": {"type": "websocket.connect"}}
    ]
    assert server.create_application("request", {"type": "http"}) == "stock queue"


@pytest.mark.parametrize(("cli", "seen"), [(5, 15), (30, 30), (0, 0)])
def test_the_handshake_timeout_is_raised_to_the_setting_unless_longer_or_off(cli: int, seen: int) -> None:
    server_class = type("Server", (_Server,), {})
    patches.patch_handshake_timeout(server_class, 15)
    server = server_class()
    server.websocket_connect_timeout = server.websocket_handshake_timeout = cli

    server.run()

    assert (server.websocket_connect_timeout, server.websocket_handshake_timeout, server.runs) == (seen, seen, 1)


class _Reactor:
    """A stand-in for Twisted's reactor that records what is scheduled on it."""

    def __init__(self) -> None:
        self.later: list[tuple[float, Callable[[], None]]] = []
        self.when_running: list[Callable[[], None]] = []
        self.stops = 0

    def callLater(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        self.later.append((delay, functools.partial(callback, *args) if args else callback))

    def turn(self) -> None:
        """Run what was scheduled, as the reactor's next turn would."""
        later, self.later = self.later, []
        for _delay, callback in later:
            callback()

    def callWhenRunning(self, callback: Callable[[], None]) -> None:
        self.when_running.append(callback)

    def callFromThread(self, callback: Callable[[], None]) -> None:
        callback()

    def stop(self) -> None:
        self.stops += 1


class _Connection:
    def __init__(self, check_timeouts: Callable[[], None]) -> None:
        self.check_timeouts = check_timeouts


async def test_the_checks_walk_every_connection_then_schedule_their_next_run() -> None:
    server_class = type("Server", (_Server,), {})
    reactor = _Reactor()
    patches.patch_sliced_checks(server_class, reactor)
    server = server_class()
    checked: list[int] = []
    for number in range(1200):  # three slices
        server.connections[_Connection(functools.partial(checked.append, number))] = {}
    finished = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    server.connections[_Connection(lambda: None)] = {"disconnected": 1.0, "application_instance": finished}

    server.timeout_checker()
    server.application_checker()
    while len(reactor.later) < 2:  # noqa: ASYNC110  the walks end by scheduling their next run
        await asyncio.sleep(0.05)

    assert checked == list(range(1200))
    assert len(server.connections) == 1200  # the finished, disconnected one is forgotten
    assert sorted(delay for delay, _ in reactor.later) == [pytest.approx(0.5, abs=0.2), 1]
    assert {callback for _, callback in reactor.later} == {server.timeout_checker, server.application_checker}


def test_the_drain_closes_open_sockets_with_1001_on_sigterm_then_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    handlers: dict[int, Callable[..., None]] = {}
    monkeypatch.setattr(signal, "signal", lambda signum, handler: handlers.__setitem__(signum, handler))
    protocol_class = type("Protocol", (), {"STATE_OPEN": 3})
    server_class = type("Server", (_Server,), {})
    reactor = _Reactor()
    patches.patch_drain(server_class, protocol_class, reactor)
    server = server_class()
    server.run()
    socket = _open_protocol(protocol_class)
    application = SimpleNamespace(done=lambda: False)
    server.connections[socket] = {"application_instance": application}

    [install_handlers] = reactor.when_running
    install_handlers()
    handlers[signal.SIGTERM](signal.SIGTERM, None)

    assert socket.closes == [(1001, b"node shutting down")] and reactor.stops == 0
    application.done = lambda: True  # the consumer ran its disconnect
    reactor.later[-1][1]()
    assert reactor.stops == 1 and set(handlers) == {signal.SIGTERM, signal.SIGINT} and server.runs == 1


def _autobahn_protocol_module() -> Any:
    return SimpleNamespace(pformat=pprint.pformat, Timings=type("Timings", (), {"_timings": {"open": 0.25}}))


def test_autobahn_pretty_prints_its_options_only_when_the_line_is_written() -> None:
    module = _autobahn_protocol_module()
    options = {"maxFramePayloadSize": 65536, "failByDrop": False}
    patches.patch_lazy_autobahn_pformat(module)

    later = module.pformat(options)

    assert not isinstance(later, str)  # nothing formatted yet
    assert f"attrs={later}" == f"attrs={pprint.pformat(options)}"
    assert str(module.Timings()) == pprint.pformat({"open": 0.25})  # a real string, as __str__ must be


def test_autobahn_is_left_alone_when_it_stops_importing_pformat() -> None:
    module = _autobahn_protocol_module()
    module.pformat = lambda value: repr(value)
    stock = (module.pformat, module.Timings.__str__)

    patches.patch_lazy_autobahn_pformat(module)

    assert (module.pformat, module.Timings.__str__) == stock


def test_twisted_is_told_not_to_parse_post_forms() -> None:
    built: list[dict[str, Any]] = []
    stock_request = type("WebRequest", (), {"__init__": lambda self, *args, **kwargs: built.append(kwargs)})
    module = SimpleNamespace(WebRequest=stock_request)
    patches.patch_no_form_parsing(module)

    module.WebRequest("channel", 0)

    assert issubclass(module.WebRequest, stock_request) and built == [{"parsePOSTFormSubmission": False}]


def _request_module(*, upgrades: bool) -> SimpleNamespace:
    class WebRequest:
        def __init__(self, channel: Any) -> None:
            self.channel, self.transport = channel, channel.transport  # as Twisted's Request does
            channel.requests.append(self)

        def process(self) -> str:
            if upgrades:  # daphne hands the transport to a WebSocket protocol
                self.transport = None
            return "processed"

    return SimpleNamespace(WebRequest=WebRequest)


@pytest.mark.parametrize(
    ("upgrades", "transport", "released"),
    [
        (True, "tcp", True),  # a WebSocket handshake, handed over
        (False, "tcp", False),  # an HTTP request keeps its channel, which answers it
        (False, None, False),  # an HTTP/2 stream's request never had a transport of its own
    ],
)
def test_a_websocket_handshake_request_and_its_channel_are_unlinked_after_the_hand_over(
    upgrades: bool, transport: str | None, released: bool
) -> None:
    module, reactor = _request_module(upgrades=upgrades), _Reactor()
    stock = module.WebRequest
    patches.patch_upgraded_request_release(module, reactor)
    channel = SimpleNamespace(requests=[], transport=transport)
    request = module.WebRequest(channel)

    assert request.process() == "processed"
    assert request.channel is channel and channel.requests == [request]  # not while its call stack runs
    assert all(delay == 0 for delay, _callback in reactor.later)  # the next turn
    reactor.turn()

    assert issubclass(module.WebRequest, stock)
    if released:  # no cycle left for the collector: reference counting frees both
        assert request.channel is None and channel.requests == []
    else:
        assert request.channel is channel and channel.requests == [request]


def test_a_handshake_request_finished_by_an_error_after_the_hand_over_is_left_to_twisted() -> None:
    module, reactor = _request_module(upgrades=True), _Reactor()
    finishing = module.WebRequest.process

    def process_then_fail(self: Any) -> str:  # daphne's basic_error path: Twisted's _cleanup deletes .channel
        finishing(self)
        del self.channel
        return "processed"

    module.WebRequest.process = process_then_fail
    patches.patch_upgraded_request_release(module, reactor)
    request = module.WebRequest(SimpleNamespace(requests=[], transport="tcp"))

    assert request.process() == "processed"
    assert reactor.later == []


def test_a_post_that_twisted_would_refuse_as_a_bad_form_is_answered_by_django(tmp_path: Path) -> None:
    # Stock Twisted parses a multipart POST itself and answers a body it cannot read with a bare 400
    # before the application hears of it; the node leaves the body to Django, which answers by its
    # own rules (here CSRF's refusal, with the product's security headers).
    with echo_node(tmp_path) as node:
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        connection.request(
            "POST",
            "/healthz",
            b"not a multipart body",
            {"Content-Type": "multipart/form-data; boundary=xyz", "Host": "localhost"},
        )
        answer = connection.getresponse()
        answer.read()
        connection.close()

    assert (answer.status, answer.getheader("X-Frame-Options")) == (403, "DENY")


@pytest.fixture(autouse=True)
def _not_installed() -> Iterator[None]:
    yield
    assert not patches.installed()  # these tests patch stand-ins, never this process's daphne
