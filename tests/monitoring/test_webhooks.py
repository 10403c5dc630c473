"""The webhook's parts: the signature receivers check, the backoff between attempts, and one POST
against a real receiver, bounded as a whole by its timeout."""

from __future__ import annotations

import random
import time
from http import HTTPStatus
from pathlib import Path

import pytest

from monitoring.webhooks import (
    WebhookOutcome,
    backoff_countdown,
    webhook_body,
    webhook_post,
    webhook_signature,
    webhook_signature_valid,
)
from tests.monitoring.webhook_server import self_signed_tls, webhook_server


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    rng = random.Random(7)  # noqa: S311  seeded jitter for the test, not a secret
    for attempt, step in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (9, 10.0)]:
        waits = [backoff_countdown(attempt=attempt, base=2.0, cap=10.0, rng=rng) for _ in range(200)]
        assert step / 2 <= min(waits) and max(waits) <= step
        assert max(waits) - min(waits) > step / 4  # jittered, not constant


def test_a_signature_binds_the_secret_the_timestamp_and_the_body() -> None:
    secret, body = "s" * 32, b'{"a":1}'
    signature = webhook_signature(secret=secret, timestamp=100, body=body)
    assert webhook_signature_valid(secret=secret, timestamp=100, body=body, signature=signature)
    assert not webhook_signature_valid(secret="t" * 32, timestamp=100, body=body, signature=signature)
    assert not webhook_signature_valid(secret=secret, timestamp=101, body=body, signature=signature)
    assert not webhook_signature_valid(secret=secret, timestamp=100, body=b'{"a":2}', signature=signature)


def test_the_body_is_compact_sorted_utf8_json() -> None:
    assert webhook_body({"b": "Jo\u00e3o", "a": [1, None]}) == '{"a":[1,null],"b":"Jo\u00e3o"}'.encode()


# --- One POST, bounded as a whole (a real receiver on 127.0.0.1) ------------------------------------


def _post(url: str, *, timeout: float) -> tuple[WebhookOutcome, float]:
    started = time.monotonic()
    outcome = webhook_post(
        url=url, secret="s" * 32, body=b"{}", delivery_id="e", attempt=1, timestamp=1, timeout=timeout
    )
    return outcome, time.monotonic() - started


@pytest.mark.parametrize(("status", "drip_bytes"), [(HTTPStatus.OK, 40), (HTTPStatus.BAD_GATEWAY, 80)])
def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_whole_request_timeout(
    status: int, drip_bytes: int
) -> None:
    """Each byte comes well within any per-read timeout, so only a deadline on the whole request
    ends it: the status line and headers (200), or the refusal's body (502), trickle for seconds."""
    timeout = 0.5
    with webhook_server(then=status) as hook:
        hook.drip = 0.05  # about 20 bytes a second: the answer would take drip_bytes / 20 s and more
        outcome, took = _post(hook.url, timeout=timeout)
        assert len(hook.received) == 1
    assert (outcome.delivered, outcome.status) == (False, None)
    assert "timed out" in outcome.error
    assert took < drip_bytes * hook.drip / 2  # let go long before the answer could have ended


def test_an_answer_that_trickles_within_the_timeout_is_read() -> None:
    with webhook_server(then=HTTPStatus.SERVICE_UNAVAILABLE) as hook:
        hook.drip = 0.001
        outcome, _ = _post(hook.url, timeout=10)
    assert outcome == WebhookOutcome(delivered=False, status=503, error="HTTP 503: integrator says no")


def test_a_quick_2xx_is_delivered_and_a_redirect_is_not_followed() -> None:
    with webhook_server(script=[HTTPStatus.NO_CONTENT, HTTPStatus.FOUND]) as hook:
        assert _post(hook.url, timeout=2)[0] == WebhookOutcome(delivered=True, status=204, error="")
        moved, _ = _post(hook.url, timeout=2)
        assert (moved.delivered, moved.status, len(hook.received)) == (False, 302, 2)


def test_a_bad_url_is_an_outcome_not_an_exception() -> None:
    outcome, _ = _post("ftp://127.0.0.1/hook", timeout=1)
    assert (outcome.delivered, outcome.status) == (False, None)
    assert outcome.error.startswith("ValueError: not an http(s) URL")


def test_over_tls_the_receivers_certificate_is_checked_and_a_trickle_is_cut_off_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, certificate = self_signed_tls(tmp_path)
    with webhook_server(tls=tls) as hook:
        untrusted, _ = _post(hook.url, timeout=2)
        assert (untrusted.delivered, untrusted.status) == (False, None)
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # OpenSSL reads it when a context loads its CAs
        assert _post(hook.url, timeout=2)[0] == WebhookOutcome(delivered=True, status=200, error="")
        hook.drip = 0.05
        trickled, took = _post(hook.url, timeout=0.5)
    assert (trickled.delivered, "timed out" in trickled.error) == (False, True)
    assert took < 1.0
