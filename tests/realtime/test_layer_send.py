"""Handing messages to the channel layer after a commit without waiting for Redis (issue 16, item 8),
and the rate limit's breaker that stops asking a Redis that does not answer."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from channels.layers import channel_layers
from django.test import override_settings

from monitoring.metrics import LAYER_SENDS_DROPPED
from realtime import layer_send
from realtime.limits.breaker import RedisBreaker
from realtime.limits.publish_rate import _rate_limiter, publish_rate_check
from realtime.messages import ControlMessage, EventMessage
from tests.servers import redis_server
from wedsync.settings import channel_layer_config

pytestmark = [pytest.mark.requires_redis]


def _event(seq: int) -> EventMessage:
    return EventMessage(wedding=1, seq=seq, priority=2, roles=["guest"], members=[], frame={"op": "event"})


def _dropped(reason: str) -> float:
    return LAYER_SENDS_DROPPED.labels(reason=reason)._value.get()


async def test_a_thread_hands_sends_to_the_node_loop_and_goes_on(monkeypatch) -> None:
    monkeypatch.setattr(layer_send, "SEND_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(layer_send, "MAX_PENDING_SENDS", 2)
    with redis_server() as redis:
        layer = {"default": channel_layer_config(redis_url=redis.url, kind="pubsub")}
        with override_settings(CHANNEL_LAYERS=layer):
            channel_layers.backends.clear()
            loop = asyncio.get_running_loop()
            layer_send.node_loop_register(loop)
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)  # a partition: connected, never answering
            try:
                timeouts, overflows = _dropped("timeout"), _dropped("overflow")
                finished = threading.Event()

                def commit_then_send() -> None:  # what transaction.on_commit does in a pool thread
                    for seq in (1, 2, 3):
                        layer_send.layer_group_send("wedding.1", _event(seq))
                    finished.set()

                thread = threading.Thread(target=commit_then_send)
                thread.start()
                await asyncio.to_thread(finished.wait, 5)
                assert finished.is_set()  # the thread did not wait for Redis
                async with asyncio.timeout(5):
                    while _dropped("timeout") < timeouts + 2:  # noqa: ASYNC110  a counter, not an event
                        await asyncio.sleep(0.05)
                # Two were waiting on the silent Redis: the third was dropped at once, not queued.
                assert _dropped("overflow") == overflows + 1
                thread.join()
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
                layer_send.node_loop_unregister(loop)
                channel_layers.backends.clear()


async def test_a_send_that_absorbs_its_cancel_is_counted_at_its_deadline_and_once(monkeypatch) -> None:
    """The Redis client may swallow a cancellation (a retry on its own timeout); the drop is still
    counted when the deadline passes, and the send keeps its place until it really ends."""
    monkeypatch.setattr(layer_send, "SEND_TIMEOUT_SECONDS", 0.2)
    released = asyncio.Event()

    async def stubborn_send(group: str, message: object) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await released.wait()  # goes on as if nothing had happened
            raise ConnectionError("the partition ended badly") from None

    monkeypatch.setattr(layer_send, "_send", stubborn_send)
    loop = asyncio.get_running_loop()
    layer_send.node_loop_register(loop)
    try:
        timeouts, errors = _dropped("timeout"), _dropped("error")
        layer_send.layer_group_send("wedding.1", _event(1))
        pending = layer_send._node_loops[loop]
        assert len(pending) == 1
        async with asyncio.timeout(5):
            while _dropped("timeout") < timeouts + 1:  # noqa: ASYNC110  a counter, not an event
                await asyncio.sleep(0.02)
        assert len(pending) == 1  # still running: it still counts against the bound
        released.set()
        async with asyncio.timeout(5):
            while pending:  # noqa: ASYNC110  the set empties from a done callback
                await asyncio.sleep(0.02)
        assert _dropped("timeout") == timeouts + 1
        assert _dropped("error") == errors  # its late failure is not a second drop
    finally:
        layer_send.node_loop_unregister(loop)


def test_without_a_node_loop_the_send_is_bounded_where_it_runs(monkeypatch) -> None:
    monkeypatch.setattr(layer_send, "SEND_TIMEOUT_SECONDS", 0.5)
    with redis_server() as redis:
        layer = {"default": channel_layer_config(redis_url=redis.url, kind="pubsub")}
        with override_settings(CHANNEL_LAYERS=layer):
            channel_layers.backends.clear()
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                timeouts = _dropped("timeout")
                layer_send.layer_group_send("wedding.1", _event(1))  # never raises
                assert _dropped("timeout") == timeouts + 1
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
                channel_layers.backends.clear()


def test_the_breaker_opens_on_a_failure_and_closes_after_its_time() -> None:
    breaker = RedisBreaker(open_seconds=0.2)
    assert breaker.allows_asking()
    breaker.failed()
    assert not breaker.allows_asking()
    time.sleep(0.25)
    assert breaker.allows_asking()


def test_a_silent_redis_costs_the_rate_check_one_timeout_then_none(settings) -> None:
    with redis_server() as redis:
        settings.REDIS_URL = redis.url
        assert publish_rate_check(member_id=1, role="guest", event_type="chat.message").allowed
        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            breaker = _rate_limiter(redis.url).breaker
            assert breaker.allows_asking()
            # Fails open (a message that flows beats a perfect count), and stops asking for a while.
            assert publish_rate_check(member_id=1, role="guest", event_type="chat.message").allowed
            assert not breaker.allows_asking()
            assert publish_rate_check(member_id=1, role="guest", event_type="chat.message").allowed
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)


async def test_a_silent_redis_costs_the_limits_one_bounded_wait_then_none(settings, monkeypatch) -> None:
    from realtime.limits import node as limits_module

    monkeypatch.setattr(limits_module, "LIMITS_CALL_SECONDS", 0.5)
    with redis_server() as redis:
        settings.REDIS_URL = redis.url
        limits = limits_module.Limits()
        try:
            assert (await limits.op_spend(user_id=1, op="presence", per_minute=10)).allowed
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                async with asyncio.timeout(3):  # a bound on a hang: its socket timeout is 5 s
                    assert (await limits.op_spend(user_id=1, op="presence", per_minute=10)).allowed
                assert not limits._breaker.allows_asking()  # the next calls do not ask it
                admission = await limits.address_admit(address="198.51.100.9")
                assert admission.allowed
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
        finally:
            await limits.close()


async def test_the_node_loop_gets_an_event_whose_send_is_dropped_but_not_a_dropped_control(monkeypatch) -> None:
    monkeypatch.setattr(layer_send, "MAX_PENDING_SENDS", 0)  # every send to Redis overflows
    loop = asyncio.get_running_loop()
    seen: list[tuple[object, bool]] = []
    layer_send.node_loop_register(
        loop, local=lambda message: seen.append((message, asyncio.get_running_loop() is loop))
    )
    try:
        overflows = _dropped("overflow")
        committed = threading.Thread(target=layer_send.layer_group_send, args=("wedding.1", _event(7)))
        committed.start()
        await asyncio.to_thread(committed.join, 5)
        control = ControlMessage(kind="tokens_revoked", user=1, generation=2)
        layer_send.layer_group_send("nodes", control)
        async with asyncio.timeout(5):
            while _dropped("overflow") < overflows + 2:  # noqa: ASYNC110  a counter, not an event
                await asyncio.sleep(0.02)
        # The event on the node's loop, though Redis never got it; the control, never sent, would never
        # be heard back, so the hub is not told of it.
        assert seen == [(_event(7), True)]
    finally:
        layer_send.node_loop_unregister(loop)
    assert loop not in layer_send._local_messages
