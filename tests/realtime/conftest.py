from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import txaio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from twisted.internet.task import Clock

from realtime.node import hub as hub_module
from wedsync.asgi import application
from wedsync.models import Member
from wedsync.services.auth import access_token_issue

HOST = "127.0.0.1"


def _bearer(member_or_user: Any, **kwargs: Any) -> str:
    user = member_or_user.user if isinstance(member_or_user, Member) else member_or_user
    return access_token_issue(user=user, **kwargs)


bearer = database_sync_to_async(_bearer)


class Client:
    """A WebsocketCommunicator speaking protocol v1 against the real ASGI application.

    ``presence_diff`` frames are kept apart (:meth:`presence_diff`), so tests about events read
    events whoever else joins the wedding meanwhile.
    """

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self._refs = 0
        self.welcome: dict[str, Any] | None = None
        self._backlog: list[dict[str, Any]] = []  # frames that arrived while waiting for a reply
        self._presence: list[dict[str, Any]] = []  # presence_diff frames not read yet

    async def _next(self, within: float) -> dict[str, Any]:
        """The next frame that is not a presence diff (those are put aside)."""
        async with asyncio.timeout(within):
            while True:
                frame: dict[str, Any] = await self.communicator.receive_json_from(timeout=within)
                if frame.get("op") != "presence_diff":
                    return frame
                self._presence.append(frame)

    async def receive(self, within: float = 3) -> dict[str, Any]:
        if self._backlog:
            return self._backlog.pop(0)
        return await self._next(within)

    async def presence_diff(self, within: float = 3) -> dict[str, Any]:
        """The next ``presence_diff`` frame (other frames wait in the backlog)."""
        async with asyncio.timeout(within):
            while not self._presence:
                frame = await self.communicator.receive_json_from(timeout=within)
                if frame.get("op") == "presence_diff":
                    return frame
                self._backlog.append(frame)
        return self._presence.pop(0)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_json_to(frame)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a frame with a fresh ref and return its reply; frames before it wait in the backlog."""
        self._refs += 1
        ref = f"r{self._refs}"
        await self.send({"op": op, "ref": ref, **fields})
        while True:
            frame = await self._next(3)
            if frame.get("op") == "reply" and frame.get("ref") == ref:
                return frame
            self._backlog.append(frame)

    async def subscribe(self, wedding_id: int, **fields: Any) -> dict[str, Any]:
        return await self.request("subscribe", topic=f"wedding:{wedding_id}", **fields)

    async def nothing_more(self, within: float = 0.3, *, presence: bool = False) -> bool:
        """Nothing else arrives within ``within`` seconds (presence diffs count only if asked)."""
        if self._backlog or (presence and self._presence):
            return False
        if presence:
            return bool(await self.communicator.receive_nothing(timeout=within))
        # Polls like receive_nothing: a timed-out receive would cancel the application.
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.communicator.output_queue.empty():
                frame = await self.communicator.receive_json_from()
                if frame.get("op") != "presence_diff":
                    self._backlog.append(frame)
                    return False
                self._presence.append(frame)
                continue
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        await self.communicator.disconnect()


def communicator(
    *,
    subprotocols: list[str] | None = None,
    path: str = "/ws/v1/",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] | None = None,
) -> WebsocketCommunicator:
    """``client`` is the peer address a server puts in the scope (the communicator sets none)."""
    all_headers = [(b"host", f"{HOST}:8000".encode()), (b"user-agent", b"tests/1.0"), *(headers or [])]
    made = WebsocketCommunicator(application, path, headers=all_headers, subprotocols=subprotocols)
    if client is not None:
        made.scope["client"] = list(client)  # read by the application once it runs, after this
    return made


async def connect_bearer(member: Member | User, *, path: str = "/ws/v1/", **token_kwargs: Any) -> Client:
    """``path="/ws/v1/?observe=1"`` with a staff user opens an observer socket."""
    comm = communicator(path=path, subprotocols=["wedsync.v1", f"bearer.{await bearer(member, **token_kwargs)}"])
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == "wedsync.v1"
    client = Client(comm)
    client.welcome = await client.receive()
    assert client.welcome["op"] == "welcome", client.welcome
    return client


@pytest.fixture
async def sockets() -> AsyncIterator[Callable[..., Any]]:
    """Open clients with ``await sockets(member)``; all are closed and the node hub stopped after."""
    opened: list[Client] = []

    async def open_client(member: Member | User, **options: Any) -> Client:
        client = await connect_bearer(member, **options)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()
    hub = hub_module._hubs.get(asyncio.get_running_loop())
    if hub is not None:
        await hub.stop()


@pytest.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    """database_sync_to_async keeps a connection in its worker thread; close it so the test
    database can be dropped at the end of the run. The channel layer is made anew per test, since
    each test has its own event loop and the layer's locks belong to the loop that made them."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture
def txaio_clock() -> Iterator[Clock]:
    """autobahn's timers and deferred writes run on txaio's loop: a clock only the test advances."""
    txaio.use_twisted()
    clock, loop_before = Clock(), txaio.config.loop  # type: ignore[attr-defined]
    txaio.config.loop = clock  # type: ignore[attr-defined]
    yield clock
    txaio.config.loop = loop_before  # type: ignore[attr-defined]
