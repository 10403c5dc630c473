"""The webhook's pure parts: the signature receivers check, and the backoff between attempts."""

from __future__ import annotations

import random

from monitoring.webhooks import backoff_countdown, webhook_body, webhook_signature, webhook_signature_valid


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
