"""Sockets to real nodes for the shared-records tests: every frame a socket receives is kept,
replies are matched by ref, and :meth:`NodeSocket.close` says if any ref was answered other than
exactly once. Record events are folded into a member's :class:`View` the way a client would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.realtime.conftest import bearer
from tests.realtime.nodes import Cluster
from tests.records.oracle import RECORD_EVENTS
from wedsync.models import Member


class NodeSocket:
    """One websocket to one node, read by a background task into :attr:`events` and :attr:`replies`."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.events: list[dict[str, Any]] = []
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.other: list[dict[str, Any]] = []  # error / unsubscribed frames: none is expected
        self.sent: list[str] = []
        self.abandoned: set[str] = set()  # refs whose reply the test chose not to wait for
        self._refs = 0
        self._taken = 0  # events handed out by next_event
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, token: str) -> NodeSocket:
        ws = await connect(
            url,
            subprotocols=[Subprotocol("wedsync.v1"), Subprotocol(f"bearer.{token}")],
            max_size=None,
            open_timeout=10,
            ping_interval=None,
        )
        welcome = json.loads(await ws.recv())
        assert welcome.get("op") == "welcome", welcome
        return cls(ws, welcome)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                op = frame.get("op")
                if op == "reply":
                    ref = frame.get("ref")
                    self.replies.setdefault(ref, []).append(frame)
                    waiter = self._waiting.pop(ref, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                elif op == "event":
                    self.events.append(frame)
                    self._arrived.set()
                elif op != "presence_diff":
                    self.other.append(frame)

    async def send(self, op: str, **fields: Any) -> str:
        self._refs += 1
        ref = f"r{self._refs}"
        self.sent.append(ref)
        self._waiting[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({"op": op, "ref": ref, **fields}))
        return ref

    async def reply_to(self, ref: str, within: float = 10) -> dict[str, Any]:
        if ref in self.replies:
            return self.replies[ref][0]
        return await asyncio.wait_for(self._waiting[ref], within)

    async def request(self, op: str, within: float = 10, **fields: Any) -> dict[str, Any]:
        return await self.reply_to(await self.send(op, **fields), within)

    async def wait_for_events(self, count: int, within: float) -> None:
        """Until at least ``count`` events arrived on this socket (TimeoutError past ``within``)."""
        async with asyncio.timeout(within):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def next_event(self, within: float = 3) -> dict[str, Any]:
        """The next event this socket received that :meth:`next_event` has not returned yet."""
        await self.wait_for_events(self._taken + 1, within)
        self._taken += 1
        return self.events[self._taken - 1]

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def answered_badly(self) -> list[str]:
        """Refs answered twice, or (unless abandoned) never: each must be answered exactly once."""
        return [
            ref
            for ref in self.sent
            if len(self.replies.get(ref, [])) > 1 or (ref not in self.abandoned and not self.replies.get(ref))
        ]


class SubscribedSockets:
    """``await sockets.open(member, node)``: a socket to that node of ``nodes``, subscribed to the
    wedding; :meth:`close_all` closes every one opened."""

    def __init__(self, nodes: Cluster, *, wedding_id: int) -> None:
        self.nodes, self.wedding_id = nodes, wedding_id
        self.opened: list[NodeSocket] = []

    async def open(self, member: Member, node: int) -> NodeSocket:
        socket = await NodeSocket.open(self.nodes.nodes[node].url, await bearer(member))
        self.opened.append(socket)
        reply = await socket.request("subscribe", topic=f"wedding:{self.wedding_id}")
        assert reply["status"] == "ok", reply
        return socket

    async def close_all(self) -> None:
        for socket in self.opened:
            await socket.close()


@dataclass
class View:
    """A member's records as rebuilt from the ``record.*`` events it received, in order."""

    records: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # -> {"version", "values"}
    deleted: dict[tuple[str, int], int] = field(default_factory=dict)  # -> the deletion's version
    seqs: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return max(self.seqs, default=0)

    def apply(self, event: dict[str, Any]) -> None:
        if event["seq"] in self.seqs:
            self.problems.append(f"seq {event['seq']} received twice")
            return
        self.seqs.append(event["seq"])
        if event["type"] not in RECORD_EVENTS:
            return
        data = event["data"]
        key = (data["record"], data["id"])
        known = self.records.get(key)
        if known is not None and data["version"] <= known["version"]:
            self.problems.append(f"{key} went from version {known['version']} back to {data['version']}")
            return
        if event["type"] == "record.deleted":
            self.records.pop(key, None)
            self.deleted[key] = data["version"]
            return
        if key in self.deleted:
            self.problems.append(f"{key} changed after its deletion: {event}")
        values = dict(data["values"])
        if known is not None and data["version"] == known["version"] + 1:
            # The next version: every field not named in ``changed`` kept its value.
            unchanged = {name: known["values"].get(name) for name in values if name not in data["changed"]}
            moved = {name: values[name] for name in unchanged if values[name] != unchanged[name]}
            if moved:
                self.problems.append(f"{key} v{data['version']} changed {moved} without naming them in changed")
        self.records[key] = {"version": data["version"], "values": values}
