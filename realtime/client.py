"""A Python client for protocol v1 (docs/protocol.md), for integrators, the tests and the benchmarks.

It reconnects with exponential backoff and full jitter, resubscribes every topic with the last seq
it has seen (``since``) and the stream's ``epoch``, drops duplicates, and sends heartbeats at the
interval the server asks for. An event marked ``"ahead": true`` was sent before older events of
its topic; it does not advance the resume point, so nothing queued behind it is skipped on resume.

    async with RealtimeClient("ws://127.0.0.1:8000/ws/v1/", token=token) as client:
        await client.subscribe("wedding:42")
        await client.publish("wedding:42", "chat.message", {"text": "The cake has arrived"})
        async for event in client.events():
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# Close codes after which reconnecting cannot help.
FINAL_CLOSE_CODES = frozenset({1003, 1009, 4400, 4401, 4403, 4029})


def reconnect_delay(attempt: int, *, max_backoff: float = 10.0) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (1, 2, ...): exponential backoff with
    full jitter, so a thousand phones dropped together do not come back together."""
    return random.uniform(0, min(max_backoff, 0.2 * 2**attempt))  # noqa: S311 - jitter, not secrets


class ClientError(Exception):
    """An error reply: ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data or {}


class ConnectionFinished(Exception):
    """The server closed with a code after which reconnecting is pointless (see FINAL_CLOSE_CODES)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code


class RefusedForNow(Exception):
    """The server refused this connect with a code that asks to come back (not a final one), maybe
    saying after how many seconds (``retry_after``)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class TopicState:
    min_priority: str = "low"
    resume_seq: int | None = None  # passed as ``since`` when resubscribing
    epoch: str | None = None
    seen_ahead: set[int] = field(default_factory=set)  # seqs above resume_seq already delivered
    recovered: bool = True


class RealtimeClient:
    def __init__(
        self,
        url: str | list[str],
        *,
        token: str | Callable[[], Awaitable[str]],
        reconnect: bool = True,
        max_backoff: float = 10.0,
        request_timeout: float = 10.0,
        affinity: str | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)  # several: try the next on reconnect
        # ``?u=``: the balancer's key for one person's devices (deploy/haproxy); the user id, learnt
        # from the first welcome when not given.
        self.affinity = affinity
        self._skip_affinity = False  # after a refusal: one try without it (the balancer would hash it back)
        self._url_index = 0
        self._token = token
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.request_timeout = request_timeout
        self.topics: dict[str, TopicState] = {}
        self.welcome: dict[str, Any] | None = None
        self.close_codes: list[int | None] = []  # every close seen, for callers that care why
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._on_reply: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # Presence per topic, kept current from the subscribe snapshot and presence_diff frames:
        # member id -> merged state (members with view_presence), role -> online count (everyone).
        self.presence: dict[str, dict[str, dict[str, Any]]] = {}
        self.presence_counts: dict[str, dict[str, int]] = {}
        self._presence_diffs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._finished: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> RealtimeClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="realtime-client")
        await self.wait_connected()

    async def wait_connected(self) -> None:
        waiter = asyncio.create_task(self._connected.wait())
        done, _ = await asyncio.wait(
            {waiter, self._runner} if self._runner else {waiter}, return_when="FIRST_COMPLETED"
        )
        if waiter not in done:
            waiter.cancel()
            if self._finished is not None:
                raise self._finished
            raise ConnectionError("the client stopped before connecting")

    async def close(self) -> None:
        self.reconnect = False
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    async def _token_value(self) -> str:
        return self._token if isinstance(self._token, str) else await self._token()

    async def _run(self) -> None:
        attempt = 0
        while True:
            not_before = 0.0  # seconds a refusal asked to wait (retry_after)
            try:
                token = await self._token_value()
                async with connect(
                    self._url(self.urls[self._url_index % len(self.urls)]),
                    subprotocols=["wedsync.v1", f"bearer.{token}"],  # type: ignore[list-item]
                    max_size=None,
                    open_timeout=10,
                    ping_interval=None,  # protocol heartbeats instead (they refresh presence)
                ) as ws:
                    self._ws = ws
                    await self._session(ws)
                    attempt = 0
            except ConnectionFinished as finished:
                self._finished = finished
                self._fail_pending(finished)
                return
            except RefusedForNow as refused:
                self._fail_pending(refused)
                self._skip_affinity = True
                if refused.retry_after:  # a little past it: a venue's refused phones would all come back at once
                    not_before = float(refused.retry_after) + random.uniform(0.1, 0.5)  # noqa: S311 - jitter
                if not self.reconnect:
                    self._finished = refused  # what start() raises: the refusal, not a bare "stopped"
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                self._fail_pending(exc)
            finally:
                self._ws = None
                self._connected.clear()
            if not self.reconnect:
                return
            self._url_index += 1
            attempt += 1
            self.reconnects += 1
            await asyncio.sleep(max(reconnect_delay(attempt, max_backoff=self.max_backoff), not_before))

    def _url(self, url: str) -> str:
        skip, self._skip_affinity = self._skip_affinity, False
        if self.affinity is None or skip:
            return url
        parts = urlsplit(url)
        query = "&".join(part for part in (parts.query, urlencode({"u": self.affinity})) if part)
        return urlunsplit(parts._replace(query=query))

    async def _session(self, ws: ClientConnection) -> None:
        welcome = json.loads(await ws.recv())
        if welcome.get("op") != "welcome":
            code = ws.close_code
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()
            self.close_codes.append(ws.close_code or code)
            if (ws.close_code or code) in FINAL_CLOSE_CODES:
                raise ConnectionFinished(ws.close_code, welcome.get("message", ""))
            # Refused for now (1001 from a draining node, 1013 from a busy one): another try, or
            # another node behind the balancer, will take it.
            raise RefusedForNow(welcome.get("message", ""), welcome.get("retry_after"))
        self.welcome = welcome
        if self.affinity is None:
            self.affinity = str(welcome["user"]["id"])
        reader = asyncio.create_task(self._read(ws))
        heartbeat = asyncio.create_task(self._heartbeat(float(welcome["heartbeat_interval"])))
        try:
            for topic in list(self.topics):
                await self._resubscribe(topic)
            self._connected.set()
            await reader
        finally:
            heartbeat.cancel()
            reader.cancel()
            self.close_codes.append(ws.close_code)
            if ws.close_code in FINAL_CLOSE_CODES:
                raise ConnectionFinished(ws.close_code, ws.close_reason or "")

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            op = frame.get("op")
            if op == "reply":
                ref = frame.get("ref") or ""
                future = self._pending.pop(ref, None)
                on_reply = self._on_reply.pop(ref, None)
                if on_reply is not None and frame.get("status") == "ok":
                    on_reply(frame.get("data") or {})  # before any event read after it
                if future is not None and not future.done():
                    future.set_result(frame)
            elif op == "event":
                self._on_event(frame)
            elif op == "presence_diff":
                self._on_presence_diff(frame)
            elif op in ("unsubscribed", "error"):
                if op == "unsubscribed":
                    self.topics.pop(frame.get("topic", ""), None)
                self._events.put_nowait(frame)

    def _on_presence_diff(self, frame: dict[str, Any]) -> None:
        members = self.presence.setdefault(frame["topic"], {})
        for member, state in (*frame.get("joins", {}).items(), *frame.get("updates", {}).items()):
            members[member] = state
        for member in frame.get("leaves", {}):
            members.pop(member, None)
        self._presence_diffs.put_nowait(frame)

    def _on_event(self, frame: dict[str, Any]) -> None:
        state = self.topics.get(frame["topic"])
        if state is None:
            return
        seq = int(frame["seq"])
        if frame.get("resent"):
            self._events.put_nowait(frame)  # an unacknowledged emergency, again: the app re-alerts
            return
        if (state.resume_seq is not None and seq <= state.resume_seq) or seq in state.seen_ahead:
            return  # a duplicate: already delivered
        if frame.get("ahead"):
            state.seen_ahead.add(seq)
        else:
            state.resume_seq = seq
            state.seen_ahead = {ahead for ahead in state.seen_ahead if ahead > seq}
        self._events.put_nowait(frame)

    async def _heartbeat(self, interval: float) -> None:
        rtt_ms: int | None = None  # the previous heartbeat's round trip: connection quality
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            started = loop.time()
            with contextlib.suppress(ClientError, ConnectionError, TimeoutError):
                fields: dict[str, Any] = {} if rtt_ms is None else {"rtt": rtt_ms}
                await self.request("heartbeat", **fields)
                rtt_ms = round((loop.time() - started) * 1000)

    def _fail_pending(self, exc: BaseException) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"connection lost: {exc!r}"))
        self._pending.clear()
        self._on_reply.clear()

    # --- requests -----------------------------------------------------------------------------------

    async def request(
        self, op: str, *, on_reply: Callable[[dict[str, Any]], None] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one frame and return its reply's ``data``; an error reply raises :class:`ClientError`.

        ``on_reply`` runs in the reader, in frame order: state it sets is in place before any event
        that arrived after the reply is handled.
        """
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        ref = f"c{next(self._refs)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        if on_reply is not None:
            self._on_reply[ref] = on_reply
        await ws.send(json.dumps({"op": op, "ref": ref, **fields}))
        reply = await asyncio.wait_for(future, self.request_timeout)
        if reply["status"] != "ok":
            error = reply["error"]
            raise ClientError(error["code"], error["message"], error)
        data: dict[str, Any] = reply.get("data") or {}
        return data

    def _subscribed(self, topic: str, data: dict[str, Any]) -> None:
        """A subscribe reply, applied before the replay and live events that follow it."""
        state = self.topics.get(topic)
        if state is None:  # the server ended the subscription (unsubscribed) meanwhile
            return
        recovered = bool(data["recovered"])
        if state.epoch is not None and not recovered:
            # The history was reset or is too old: the caller must reload its state over REST.
            self._events.put_nowait({"op": "resync", "topic": topic, "seq": data["seq"]})
        if state.resume_seq is None or not recovered:
            state.resume_seq = int(data["seq"])
            state.seen_ahead.clear()
        state.epoch, state.recovered = data["epoch"], recovered
        snapshot = data.get("presence") or {}
        self.presence[topic] = dict(snapshot.get("members", {}))
        self.presence_counts[topic] = dict(snapshot.get("online", {}))

    async def _resubscribe(self, topic: str) -> None:
        state = self.topics[topic]
        await self.request(
            "subscribe",
            on_reply=lambda data: self._subscribed(topic, data),
            topic=topic,
            since=state.resume_seq,
            epoch=state.epoch,
            min_priority=state.min_priority,
        )

    async def subscribe(self, topic: str, *, since: int | None = None, min_priority: str = "low") -> dict[str, Any]:
        """Subscribe (and resubscribe after every reconnect). ``since`` replays what came after it."""
        self.topics[topic] = TopicState(min_priority=min_priority, resume_seq=since)
        return await self.request(
            "subscribe",
            on_reply=lambda data: self._subscribed(topic, data),
            topic=topic,
            since=since,
            min_priority=min_priority,
        )

    async def publish(
        self,
        topic: str,
        event_type: str,
        data: dict[str, Any],
        *,
        to: list[str] | None = None,
        priority: str | None = None,
        retries: int = 3,
    ) -> dict[str, Any]:
        """Publish, retrying over reconnects with one idempotency key: stored once whatever happens."""
        fields: dict[str, Any] = {"topic": topic, "type": event_type, "data": data, "idempotency_key": uuid.uuid4().hex}
        if to is not None:
            fields["to"] = to
        if priority is not None:
            fields["priority"] = priority
        for attempt in range(retries + 1):
            try:
                await self.wait_connected()
                return await self.request("publish", **fields)
            except (ConnectionError, TimeoutError):
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    # --- events -------------------------------------------------------------------------------------

    async def next_event(self, within: float | None = None) -> dict[str, Any]:
        """The next event (or ``resync``, ``unsubscribed``, ``error`` notice); presence comes apart."""
        return await asyncio.wait_for(self._events.get(), within)

    async def next_presence(self, within: float | None = None) -> dict[str, Any]:
        """The next ``presence_diff`` frame (already applied to :attr:`presence`)."""
        return await asyncio.wait_for(self._presence_diffs.get(), within)

    async def set_presence(self, topic: str, **state: Any) -> dict[str, Any]:
        """The ``presence`` op: status, location, activity, battery, charging (None clears one)."""
        return await self.request("presence", topic=topic, state=state)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self._events.get()
