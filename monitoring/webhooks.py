"""Outbound webhooks: the body's exact bytes, their HMAC signature, and one bounded HTTP POST.

Nothing here touches the database; :mod:`monitoring.services.escalation` decides what to send and
what an outcome means. The contract for receivers is docs/webhooks.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

SIGNATURE_VERSION = "v1"
HEADER_ID = "X-WedSync-Escalation-Id"
HEADER_TIMESTAMP = "X-WedSync-Timestamp"
HEADER_SIGNATURE = "X-WedSync-Signature"
HEADER_ATTEMPT = "X-WedSync-Attempt"
USER_AGENT = "WedSync-Escalation/1"
_ERROR_BODY_MAX = 300  # bytes of a refusal's body kept in last_error
_JITTER = random.Random()  # noqa: S311  jitter, not a secret


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


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not a delivery: urllib would turn the POST into a body-less GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def webhook_post(
    *, url: str, secret: str, body: bytes, escalation_id: str, attempt: int, timestamp: int, timeout: float
) -> WebhookOutcome:
    """POST ``body`` signed; any 2xx is delivered, anything else (or no answer) is not."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        HEADER_ID: escalation_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: webhook_signature(secret=secret, timestamp=timestamp, body=body),
        HEADER_ATTEMPT: str(attempt),
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310  settings allow http(s) only
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read(_ERROR_BODY_MAX).decode("utf-8", "replace").strip()
        return WebhookOutcome(delivered=False, status=exc.code, error=f"HTTP {exc.code}: {detail}".strip(": "))
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused, reset, TLS; ValueError: bad URL
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return WebhookOutcome(delivered=False, status=None, error=f"{type(exc).__name__}: {reason}")
    # urllib raises HTTPError for every status outside 2xx (redirects included, see above).
    return WebhookOutcome(delivered=True, status=status, error="")
