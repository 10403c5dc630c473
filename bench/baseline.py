"""The baseline: the textbook Channels chat consumer, served by daphne on the same Redis.

Each socket joins a channel-layer group on subscribe and every publish is one ``group_send``, so
the layer carries one message per socket per event: the design PERFORMANCE-NOTES.md measured.
It speaks the same subset of protocol v1 as the ceiling and stores nothing.

    DJANGO_SETTINGS_MODULE=wedsync.settings REDIS_URL=... python -m daphne -p 9002 bench.baseline:application
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wedsync.settings")
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

_seq = itertools.count(1)  # one process: a counter is enough for a baseline


class TextbookConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        self.groups_joined: set[str] = set()
        await self.accept(subprotocol="wedsync.v1" if "wedsync.v1" in self.scope.get("subprotocols", []) else None)
        await self.send_json({"op": "welcome", "session": self.channel_name, "heartbeat_interval": 30})

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        op, ref, topic = content.get("op"), content.get("ref"), str(content.get("topic", ""))
        group = "bench." + topic.replace(":", ".")
        if op == "subscribe":
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)
            await self.send_json({"op": "reply", "ref": ref, "status": "ok", "data": {"seq": 0}})
        elif op == "publish":
            seq = next(_seq)
            await self.send_json({"op": "reply", "ref": ref, "status": "ok", "data": {"seq": seq}})
            event = {
                "op": "event",
                "topic": topic,
                "seq": seq,
                "type": content.get("type"),
                "priority": "normal",
                "from": None,
                "data": content.get("data"),
                "at": datetime.now(UTC).isoformat(),
                "replay": False,
            }
            await self.channel_layer.group_send(group, {"type": "bench.event", "event": event})
        else:
            await self.send_json({"op": "reply", "ref": ref, "status": "ok", "data": {}})

    async def bench_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/v1/", TextbookConsumer.as_asgi())])})
