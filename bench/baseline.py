"""The baseline: the textbook Channels chat consumer, served by daphne on the same Redis.

Each socket joins a channel-layer group on subscribe and every publish is one ``group_send``, so
the layer carries one message per socket per event: the design PERFORMANCE-NOTES.md measured.
It speaks the same subset of protocol v1 as the ceiling and stores nothing; a ``presence`` op is
one ``group_send`` of a ``presence_diff`` to the wedding's presence group (the sockets that view
presence, known from the load generator's ``?bench_member=&bench_role=`` query: no auth here).

    DJANGO_SETTINGS_MODULE=wedsync.settings REDIS_URL=... python -m daphne -p 9002 bench.baseline:application
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

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
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        self.member = query.get("bench_member", ["0"])[0]
        self.sees_presence = query.get("bench_role", [""])[0] != "guest"
        await self.accept(subprotocol="wedsync.v1" if "wedsync.v1" in self.scope.get("subprotocols", []) else None)
        await self.send_json({"op": "welcome", "session": self.channel_name, "heartbeat_interval": 30})

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        op, ref, topic = content.get("op"), content.get("ref"), str(content.get("topic", ""))
        group = "bench." + topic.replace(":", ".")
        if op == "subscribe":
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)
            if self.sees_presence:
                await self.channel_layer.group_add(group + ".presence", self.channel_name)
                self.groups_joined.add(group + ".presence")
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
        elif op == "presence" and group in self.groups_joined:
            await self.send_json({"op": "reply", "ref": ref, "status": "ok", "data": {}})
            diff = {
                "op": "presence_diff",
                "topic": topic,
                "joins": {},
                "leaves": {},
                "updates": {self.member: content.get("state")},
            }
            await self.channel_layer.group_send(group + ".presence", {"type": "bench.event", "event": diff})
        else:
            await self.send_json({"op": "reply", "ref": ref, "status": "ok", "data": {}})

    async def bench_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/v1/", TextbookConsumer.as_asgi())])})
