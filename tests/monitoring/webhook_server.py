"""A real HTTP server on 127.0.0.1 that plays the integrator's webhook endpoint for the tests.

It answers each POST with the next status of ``script``, then ``then`` for good; it records what it
received (headers and exact body) so a test can check the signature the way a receiver would.
It can also misbehave the ways a real receiver does: answer late (``delay``), trickle its answer a
byte at a time (``drip``), or hold every request until the test opens ``gate``; it counts the
requests in flight at once (``max_in_flight``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names in lower case (HTTP header names are case-insensitive)
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived
    path: str = ""  # the request target, as sent


@dataclass
class WebhookServer:
    script: list[int] = field(default_factory=list)
    then: int = HTTPStatus.OK
    delay: float = 0.0  # seconds before answering (to trip the client's timeout)
    drip: float = 0.0  # seconds between the bytes of the answer (a slow-drip receiver)
    gate: threading.Event | None = None  # when set: each request waits until the test opens it
    received: list[Received] = field(default_factory=list)
    url: str = ""
    in_flight: int = 0
    max_in_flight: int = 0
    answered: int = 0  # requests whose answer was written out, or given up on by the client
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_status(self) -> int:
        return self.script.pop(0) if self.script else self.then

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.answered += 1

    def wait_for(self, condition: Callable[[WebhookServer], bool], *, timeout: float = 10.0) -> None:
        """Wait until ``condition`` holds (the server's threads change this state)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook server: condition not met in {timeout} s")
            time.sleep(0.01)


def _handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            server.started()
            try:
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.received.append(Received(headers=headers, body=body, path=self.path))
                if server.gate is not None:
                    server.gate.wait(timeout=30)
                if server.delay:
                    time.sleep(server.delay)
                status = server.next_status()
                reply = b"{}" if status < HTTPStatus.BAD_REQUEST else b"integrator says no"
                self._answer(status, reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (its timeout): that is what the test wanted
            finally:
                server.finished()

        def _answer(self, status: int, reply: bytes) -> None:
            if not server.drip:
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                return
            head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Length: {len(reply)}\r\n\r\n"
            for byte in head.encode() + reply:  # every byte well within any per-read timeout
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(server.drip)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def webhook_server(
    *, script: list[int] | None = None, then: int = HTTPStatus.OK, tls: ssl.SSLContext | None = None
) -> Iterator[WebhookServer]:
    """Serve on a free port of 127.0.0.1 in a thread until the block ends (over TLS with ``tls``)."""
    state = WebhookServer(script=list(script or []), then=then)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    scheme = "https" if tls else "http"
    state.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}/hooks/wedsync"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def self_signed_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the certificate's
    file (a client trusts it through ``SSL_CERT_FILE``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "receiver.pem", folder / "receiver.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file
