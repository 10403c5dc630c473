"""The channel layer's Redis connections survive a consumer idle for longer than 5 s.

redis-py 8 defaults to a 5 s socket timeout, the same as channels-redis's blocking read, so an idle
consumer's read could time out and the consumer die (channels_redis issue 422). Settings give the
layer a longer timeout; this drives a real consumer on the real layer past that point.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from wedsync.settings import channel_layer_config

pytestmark = pytest.mark.requires_redis

IDLE_SECONDS = 7.0  # longer than redis-py's default 5 s socket timeout and channels-redis's 5 s read


class RelayConsumer(AsyncJsonWebsocketConsumer):
    group = "idle-relay-test"

    async def connect(self) -> None:
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def relay_message(self, message: dict[str, str]) -> None:
        await self.send_json({"text": message["text"]})


def test_the_layer_is_redis_with_a_timeout_above_the_blocking_read() -> None:
    layer = settings.CHANNEL_LAYERS["default"]
    assert layer["BACKEND"].startswith("channels_redis.")
    assert layer["CONFIG"]["hosts"][0]["socket_timeout"] > 5


@pytest.mark.parametrize("kind", ["pubsub", "core"])
async def test_a_consumer_idle_for_seven_seconds_still_receives(kind: Literal["core", "pubsub"]) -> None:
    address = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"]
    with override_settings(CHANNEL_LAYERS={"default": channel_layer_config(redis_url=address, kind=kind)}):
        channel_layers.backends.clear()
        try:
            communicator = WebsocketCommunicator(RelayConsumer.as_asgi(), "/idle/")
            connected, _subprotocol = await communicator.connect()
            assert connected
            try:
                await asyncio.sleep(IDLE_SECONDS)
                await get_channel_layer().group_send(
                    RelayConsumer.group, {"type": "relay.message", "text": "still here"}
                )
                assert await communicator.receive_json_from(timeout=5) == {"text": "still here"}
            finally:
                await communicator.disconnect()
        finally:
            channel_layers.backends.clear()
