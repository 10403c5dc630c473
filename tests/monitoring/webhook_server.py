"""A real HTTP server on 127.0.0.1 that plays the integrator's webhook endpoint for the tests.

It answers each POST with the next status of ``script``, then ``then`` for good; it records what it
received (headers and exact body) so a test can check the signature the way a receiver would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names in lower case (HTTP header names are case-insensitive)
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class WebhookServer:
    script: list[int] = field(default_factory=list)
    then: int = HTTPStatus.OK
    delay: float = 0.0  # seconds before answering (to trip the client's timeout)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def next_status(self) -> int:
        return self.script.pop(0) if self.script else self.then


def _handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            server.received.append(Received(headers={k.lower(): v for k, v in self.headers.items()}, body=body))
            if server.delay:
                time.sleep(server.delay)
            status = server.next_status()
            reply = b"{}" if status < HTTPStatus.BAD_REQUEST else b"integrator says no"
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (its timeout): that is what the test wanted

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def webhook_server(*, script: list[int] | None = None, then: int = HTTPStatus.OK) -> Iterator[WebhookServer]:
    """Serve on a free port of 127.0.0.1 in a thread until the block ends."""
    state = WebhookServer(script=list(script or []), then=then)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hooks/wedsync"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
