"""Outbound webhooks: the body's exact bytes, their HMAC signature, and one HTTP POST bounded as a
whole by its timeout.

Nothing here touches the database; :mod:`monitoring.services.escalation` decides what to send and
what an outcome means. The contract for receivers is docs/webhooks.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import io
import json
import random
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SIGNATURE_VERSION = "v1"
HEADER_ID = "X-WedSync-Escalation-Id"
HEADER_TIMESTAMP = "X-WedSync-Timestamp"
HEADER_SIGNATURE = "X-WedSync-Signature"
HEADER_ATTEMPT = "X-WedSync-Attempt"
USER_AGENT = "WedSync-Escalation/1"
# Event webhooks (docs/decisions/0032) are signed the same way; only their id header and agent differ.
EVENTS_HEADER_ID = "X-WedSync-Delivery-Id"
EVENTS_USER_AGENT = "WedSync-Events/1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_ERROR_BODY_MAX = 300  # bytes of a refusal's body kept in last_error
_JITTER = random.Random()  # noqa: S311  jitter, not a secret


def webhook_url_problem(url: str, *, debug: bool) -> str | None:
    """What is wrong with ``url`` as a webhook endpoint, or None: it must be ``https://`` with a
    host, plain ``http://`` only to a loopback host or with ``debug`` on (a signed body still
    travels in clear over http). The one rule for the escalation webhook (settings) and for
    integrators' event webhooks (monitoring/services/event_webhooks/)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unbalanced IPv6 bracket, say
        host = None
    if host is None or parts.scheme not in ("https", "http"):
        return "must be an https:// URL with a host"
    if parts.scheme == "http" and not (debug or host in LOOPBACK_HOSTS):
        return "must be an https:// URL (http:// only with DEBUG on or to a loopback host)"
    return None


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON with sorted keys, UTF-8, so every attempt of
    one escalation sends the same body."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "<timestamp>." followed by the body>``. The timestamp is inside the
    MAC, so a receiver that refuses old timestamps also refuses replays of captured requests."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def webhook_signature_valid(*, secret: str, timestamp: int, body: bytes, signature: str) -> bool:
    """What a receiver does (docs/webhooks.md), in constant time."""
    return hmac.compare_digest(webhook_signature(secret=secret, timestamp=timestamp, body=body), signature)


def backoff_countdown(*, attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): exponential, capped, with equal jitter
    (half fixed, half random), so retries never come sooner than half the step and many
    escalations failing together do not retry in lockstep."""
    step = min(cap, base * 2.0 ** (attempt - 1))
    return step / 2 + (rng or _JITTER).uniform(0, step / 2)


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    delivered: bool
    status: int | None  # the HTTP status, None when there was no answer
    error: str  # empty when delivered


class _Deadline:
    """One instant every step of a request must finish by. urllib's (and requests') ``timeout`` is
    per socket operation: a receiver that trickles a byte now and then never trips it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: no complete answer within {self.seconds:g} s")
        return left


class _DeadlineReader(io.RawIOBase):
    """The response side of a socket: each read may wait only for what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        super().__init__()
        self._sock = sock
        # The socket's own unbuffered file: it keeps the connection open while the response is
        # read, even after http.client closes the connection object (it does on "Connection: close").
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.remaining())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """A connected (possibly TLS) socket whose sends and reads share one deadline. It offers
    what :class:`http.client.HTTPConnection` uses of ``self.sock``: ``sendall``, ``makefile``
    and ``close`` (the seams tests/monitoring/test_webhooks.py drives)."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        # Since Python 3.5 a socket timeout bounds the whole sendall, not each send.
        self._sock.settimeout(self._deadline.remaining())
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only mode 'rb' is supported, not {mode!r}")
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()


class _DeadlineConnection(http.client.HTTPConnection):
    """One HTTP(S) connection whose connect, TLS handshake, request and response together end by
    ``deadline``. Redirects are never followed (http.client does not): a 3xx is not a delivery."""

    def __init__(self, *, host: str, port: int, deadline: _Deadline, tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port, timeout=deadline.seconds)
        self._deadline = deadline
        self._tls = tls

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self._deadline.remaining())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                # CPython bounds the whole handshake by the socket's timeout (not each read).
                sock.settimeout(self._deadline.remaining())
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._deadline)


def _connection(url: str, deadline: _Deadline) -> tuple[_DeadlineConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return _DeadlineConnection(host=parts.hostname, port=port, deadline=deadline, tls=tls), target


def webhook_post(
    *,
    url: str,
    secret: str,
    body: bytes,
    delivery_id: str,
    attempt: int,
    timestamp: int,
    timeout: float,
    id_header: str = HEADER_ID,
    user_agent: str = USER_AGENT,
) -> WebhookOutcome:
    """POST ``body`` signed; any 2xx is delivered, anything else (or no answer) is not.
    ``delivery_id`` goes in ``id_header``: the id the receiver de-duplicates on.

    ``timeout`` bounds the whole request: connecting, TLS, sending, and the answer's status line,
    headers and (for a refusal) the first bytes of its body. Name resolution is the system
    resolver's (see docs/decisions/0023)."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": user_agent,
        id_header: delivery_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: webhook_signature(secret=secret, timestamp=timestamp, body=body),
        HEADER_ATTEMPT: str(attempt),
    }
    deadline = _Deadline(timeout)
    try:
        connection, target = _connection(url, deadline)
        with contextlib.closing(connection):
            connection.request("POST", target, body=body, headers=headers)
            with connection.getresponse() as response:
                status = int(response.status)
                if 200 <= status < 300:
                    return WebhookOutcome(delivered=True, status=status, error="")
                detail = response.read(_ERROR_BODY_MAX).decode("utf-8", "replace").strip()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # refused, reset, timed out (per step or whole request), TLS, a malformed answer, a bad URL
        return WebhookOutcome(delivered=False, status=None, error=f"{type(exc).__name__}: {exc}".strip(": "))
    return WebhookOutcome(delivered=False, status=status, error=f"HTTP {status}: {detail}".strip(": "))
