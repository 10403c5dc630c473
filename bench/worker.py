"""A load-generator worker process: its share of the sockets (picows: a C-speed client, so the
generator is not what saturates first) and the commands it obeys over its pipe (connect, publish,
drop-and-resume, presence, shared-record edits, publishing over HTTP, collect). See
:mod:`bench.loadgen` for the whole."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import picows

from bench import records
from bench.presence_match import PresenceMatch, SentUpdate, presence_match, presence_state, presence_token
from bench.resume import RETRYABLE_REFUSALS, RefusedForGood, RefusedForNow, failure_text, node_order

if TYPE_CHECKING:
    from bench.http_publishers import HttpPublishers
    from bench.loadgen import SocketSpec


# Frames as the generator needs them: everything else in a frame is ignored by the decoder.
_Data = dict[str, Any]


class _Incoming(msgspec.Struct):
    op: str
    ref: str | None = None
    status: str | None = None
    topic: str | None = None
    seq: int | None = None
    type: str | None = None  # event
    replay: bool = False
    data: _Data | None = None
    error: _Data | None = None
    heartbeat_interval: int | None = None  # welcome
    code: str | None = None  # error
    retry_after: float | None = None
    joins: dict[str, _Data] | None = None  # presence_diff
    updates: dict[str, _Data] | None = None


_decode = msgspec.json.Decoder(_Incoming).decode


REPLY_WAIT = 30.0  # for the replies to a publisher's last frames, after it sent them
CATCH_UP_WAIT = 10.0  # for a resumed socket's replay (a server without replay never catches up)
COMMAND_WAIT = 300.0  # for a worker's answer to one command
_encode = msgspec.json.Encoder().encode


@dataclass
class _Tally:
    """What every socket of one worker received, kept across reconnects (keyed by member)."""

    seen: dict[int, set[int]] = field(default_factory=dict)
    duplicates: int = 0
    latencies: list[float] = field(default_factory=list)
    replayed: int = 0
    last_receipt: float = 0.0
    counting: bool = False
    # presence: receiver member -> subject member -> [(arrival, token)] of the diffs naming it
    presence: dict[int, dict[int, list[tuple[float, int]]]] = field(default_factory=dict)
    presence_frames: int = 0  # presence_diff frames received while counting
    presence_unexpected: int = 0  # entries in presence_diff frames to sockets without view_presence
    # shared records (bench.records): member -> [(key, arrival)] of the events and notices it got
    records: bool = False
    record_events: dict[int, list[tuple[Hashable, float]]] = field(default_factory=dict)
    record_notices: dict[int, list[tuple[Hashable, float]]] = field(default_factory=dict)
    record_leaks: int = 0  # events showing a hidden field to a role that may not see it

    def reset(self, *, records: bool = False) -> None:
        for seqs in self.seen.values():
            seqs.clear()
        self.duplicates = 0
        self.latencies.clear()
        self.replayed = 0
        self.presence.clear()
        self.presence_frames = 0
        self.presence_unexpected = 0
        self.records = records
        self.record_events.clear()
        self.record_notices.clear()
        self.record_leaks = 0
        self.counting = True


class BenchSocket(picows.WSListener):
    def __init__(self, spec: SocketSpec, tally: _Tally) -> None:
        self.spec = spec
        self.tally = tally
        self.transport: picows.WSTransport | None = None
        self.last_seq = 0
        self.waiting: dict[str, asyncio.Future[_Incoming]] = {}
        self.welcome: asyncio.Future[_Incoming] = asyncio.get_running_loop().create_future()
        self.caught_up: asyncio.Future[None] | None = None
        self.catch_up_to = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seen = tally.seen.setdefault(spec.member, set())
        self.replied: dict[str, float] | None = None  # ref -> arrival of its reply, when timed (records)

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError("the server closed the socket before its welcome"))

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        message = _decode(frame.get_payload_as_bytes())
        if message.op == "event" and message.seq is not None:
            seq = message.seq
            self.last_seq = max(self.last_seq, seq)
            tally = self.tally
            if tally.counting:
                if seq in self.seen:
                    tally.duplicates += 1
                else:
                    self.seen.add(seq)
                now = time.time()
                tally.last_receipt = now
                if message.replay:
                    tally.replayed += 1
                elif message.data and (text := message.data.get("text", "")).startswith("sent "):
                    tally.latencies.append(now - float(text[5:]))
                if tally.records:
                    self._record_receipt(message, now)
            if self.caught_up is not None and not self.caught_up.done() and self.last_seq >= self.catch_up_to:
                self.caught_up.set_result(None)
        elif message.op == "presence_diff":
            if self.tally.counting:
                self._presence_diff(message)
        elif message.op == "welcome":
            if not self.welcome.done():
                self.welcome.set_result(message)
        elif message.op == "error" and not self.welcome.done():
            code = message.code or ""
            if code in RETRYABLE_REFUSALS:
                self.welcome.set_exception(RefusedForNow(code, message.retry_after))
            else:  # unauthorized, forbidden...: the clients stop for good (PROTOCOL.md's final codes)
                self.welcome.set_exception(RefusedForGood(code))
        elif message.op == "reply" and message.ref is not None:
            if self.replied is not None:
                self.replied[message.ref] = time.time()
            waiter = self.waiting.pop(message.ref, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    def _record_receipt(self, message: _Incoming, now: float) -> None:
        found = records.receipt_key(message)
        if found is None:
            return
        kind, key = found
        store = self.tally.record_events if kind == "event" else self.tally.record_notices
        store.setdefault(self.spec.member, []).append((key, now))
        if records.leaks(self.spec, message):
            self.tally.record_leaks += 1

    def _presence_diff(self, message: _Incoming) -> None:
        tally = self.tally
        now = time.time()
        tally.presence_frames += 1
        tally.last_receipt = now
        entries = [*(message.joins or {}).items(), *(message.updates or {}).items()]
        if not self.spec.sees_presence:
            tally.presence_unexpected += len(entries)
            return
        mine = tally.presence.setdefault(self.spec.member, {})
        for member, state in entries:
            token = presence_token(state)
            if token is not None:
                mine.setdefault(int(member), []).append((now, token))

    def send(self, frame: dict[str, Any]) -> None:
        if self.transport is None:
            raise RuntimeError("not connected")
        self.transport.send(picows.WSMsgType.TEXT, _encode(frame))

    def request(self, frame: dict[str, Any]) -> asyncio.Future[_Incoming]:
        waiter: asyncio.Future[_Incoming] = asyncio.get_running_loop().create_future()
        self.waiting[frame["ref"]] = waiter
        self.send(frame)
        return waiter


class Worker:
    """One process's sockets and the commands the main process sends them (resuming them:
    :mod:`bench.resume`)."""

    def __init__(self, urls: list[str], specs: list[SocketSpec]) -> None:
        self.urls = urls
        self.specs = specs
        self.node_of: dict[int, int] = {}  # member -> index in urls of the node its socket is on
        self.down: set[int] = set()  # nodes that refused a connection, as a balancer's check marks them
        self.tally = _Tally()
        self.sockets: dict[int, BenchSocket] = {}
        self._connect_next = 0  # specs before this index have been connected (or tried)
        self.published: dict[str, list[int]] = {}
        self.refused = 0
        self.unanswered = 0
        self.presence_next: dict[int, int] = {}  # member -> n of its next presence update
        self.presence_sent: dict[str, dict[int, list[SentUpdate]]] = {}  # topic -> member -> updates
        self.keepalive_task: asyncio.Task[None] | None = None
        self.records_state: records.EditState | None = None  # the editors' view of the timeline
        self.http_publishers: HttpPublishers | None = None  # the planners' HTTP connections (issue 20)

    async def _open(self, spec: SocketSpec, *, resume: bool, refused_by: int | None = None) -> BenchSocket:
        """Connect, await the welcome, subscribe (with ``since`` when resuming) and catch up.
        ``refused_by``: the node that refused the last try, tried last now, as the clients' next
        try after a 1013 goes without the affinity hint and the balancer places it (decision 0043)."""
        headers = {"Sec-WebSocket-Protocol": f"wedsync.v1, bearer.{spec.token}"}
        since = self.sockets[spec.member].last_seq if resume and spec.member in self.sockets else None
        order = node_order(spec.member, len(self.urls))
        candidates = [node for node in order if node not in self.down] or order
        if refused_by in candidates:
            candidates = [node for node in candidates if node != refused_by] + [refused_by]
        for node in candidates:
            try:
                _transport, listener = await picows.ws_connect(
                    lambda: BenchSocket(spec, self.tally),
                    self.urls[node] + spec.query,
                    extra_headers=headers,
                    websocket_handshake_timeout=30,
                    max_frame_size=1 << 20,
                )
                break
            except ConnectionRefusedError:
                if len(self.urls) == 1 or node == candidates[-1]:
                    raise
                self.down.add(node)  # and on to the next at once, as a balancer redispatches
        if not isinstance(listener, BenchSocket):  # picows hands back None when the server hung up
            raise ConnectionError("the server closed the connection during the handshake")
        try:
            sock = await self._welcome_subscribe(listener, spec, since=since, resume=resume, node=node)
        except BaseException:
            # Whatever failed after the handshake, the socket goes: left open it would stay subscribed
            # and counted on the server, and add to the member's seqs beside the next try.
            if listener.transport is not None:
                listener.transport.disconnect(graceful=False)
            previous = self.sockets.get(spec.member)
            if previous is not None and listener.last_seq > previous.last_seq:
                previous.last_seq = listener.last_seq  # what it received counts: the next try resumes after it
            raise
        self.sockets[spec.member] = sock
        self.node_of[spec.member] = node
        self.down.discard(node)
        return sock

    async def _welcome_subscribe(
        self, sock: BenchSocket, spec: SocketSpec, *, since: int | None, resume: bool, node: int
    ) -> BenchSocket:
        if since is not None:
            sock.last_seq = since
        try:
            await asyncio.wait_for(sock.welcome, 30)
        except RefusedForNow as refused:
            refused.node = node
            raise
        reply = await asyncio.wait_for(
            sock.request({"op": "subscribe", "ref": "s", "topic": spec.topic, "since": since, "epoch": None}), 30
        )
        if reply.status != "ok":
            raise RuntimeError(f"subscribe refused: {reply.error}")
        current = int((reply.data or {}).get("seq") or 0)
        if resume and since is not None and current > since:
            sock.catch_up_to = current
            sock.caught_up = asyncio.get_running_loop().create_future()
            if sock.last_seq < current:
                await asyncio.wait_for(sock.caught_up, CATCH_UP_WAIT)
        return sock

    async def connect(self, *, concurrency: int, limit: int | None = None) -> dict[str, Any]:
        """Connect the next ``limit`` sockets not tried yet (all the rest by default)."""
        end = len(self.specs) if limit is None else min(self._connect_next + limit, len(self.specs))
        batch, self._connect_next = self.specs[self._connect_next : end], end
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        done_at: list[float] = []
        started = time.perf_counter()

        async def one(spec: SocketSpec) -> None:
            async with gate:
                try:
                    await self._open(spec, resume=False)
                    done_at.append(time.perf_counter() - started)
                except Exception as error:
                    failures.append(failure_text(error))

        await asyncio.gather(*(one(spec) for spec in batch))
        done_at.sort()
        return {
            "connected": len(done_at),
            "failed": len(failures),
            "failures": failures[:5],
            "seconds": done_at[-1] if done_at else None,
            "completion_times": done_at,
        }

    async def publish(self, *, rate: float, seconds: float, burst: int) -> dict[str, Any]:
        """Each publisher socket sends at ``rate``/s for ``seconds`` (staggered), or ``burst`` at once."""
        publishers = [sock for sock in self.sockets.values() if sock.spec.publisher]
        counter = 0

        async def one(sock: BenchSocket, offset: float) -> None:
            nonlocal counter
            waits: list[asyncio.Future[_Incoming]] = []
            started = time.perf_counter() + offset
            total = burst if burst else max(int(rate * seconds), 1)
            for n in range(total):
                if not burst:
                    await asyncio.sleep(max(started + n / rate - time.perf_counter(), 0))
                counter += 1
                frame = {
                    "op": "publish",
                    "ref": f"p{counter}",
                    "topic": sock.spec.topic,
                    "type": "chat.message",
                    "data": {"text": f"sent {time.time():.6f}"},
                }
                waits.append(sock.request(frame))
            deadline = time.perf_counter() + REPLY_WAIT
            for waiter in waits:
                try:
                    reply = await asyncio.wait_for(waiter, max(deadline - time.perf_counter(), 0.01))
                except TimeoutError:
                    self.unanswered += 1  # maybe stored, maybe not: its seq is not expected of anyone
                    continue
                if reply.status == "ok" and reply.data and "seq" in reply.data:
                    self.published.setdefault(sock.spec.topic, []).append(int(reply.data["seq"]))
                else:
                    self.refused += 1

        spread = 1 / rate if rate and not burst else 0
        await asyncio.gather(*(one(sock, spread * i / max(len(publishers), 1)) for i, sock in enumerate(publishers)))
        return {
            "published": {topic: list(seqs) for topic, seqs in self.published.items()},
            "refused": self.refused,
            "unanswered": self.unanswered,
        }

    async def presence(self, *, interval: float, seconds: float) -> dict[str, Any]:
        """Each socket sends a presence update every ``interval`` s for ``seconds`` (the sockets
        staggered over the interval), each a real change (:func:`presence_state`)."""
        sockets = list(self.sockets.values())
        started = time.perf_counter()
        refused: list[str] = []

        async def one(sock: BenchSocket, offset: float) -> None:
            member, topic = sock.spec.member, sock.spec.topic
            log = self.presence_sent.setdefault(topic, {}).setdefault(member, [])
            waits: list[tuple[int, asyncio.Future[_Incoming]]] = []
            total = max(int((seconds - offset) / interval + 0.999), 0)
            for k in range(total):
                await asyncio.sleep(max(started + offset + k * interval - time.perf_counter(), 0))
                n = self.presence_next.get(member, 0)
                self.presence_next[member] = n + 1
                frame = {"op": "presence", "ref": f"u{n}", "topic": topic, "state": presence_state(n)}
                log.append((n, time.time(), False))
                waits.append((len(log) - 1, sock.request(frame)))
            deadline = time.perf_counter() + REPLY_WAIT
            for index, waiter in waits:
                try:
                    reply = await asyncio.wait_for(waiter, max(deadline - time.perf_counter(), 0.01))
                except TimeoutError:
                    self.unanswered += 1  # maybe applied, maybe not: not expected of anyone
                    continue
                if reply.status == "ok":
                    n, at, _ = log[index]
                    log[index] = (n, at, True)
                else:
                    self.refused += 1
                    if len(refused) < 5:
                        refused.append(str(reply.error)[:200])

        await asyncio.gather(*(one(sock, interval * i / max(len(sockets), 1)) for i, sock in enumerate(sockets)))
        return {"sent": self.presence_sent, "refused": self.refused, "unanswered": self.unanswered, "why": refused}

    def keepalive(self, *, seconds: float) -> float:
        """Send a ``heartbeat`` from every socket at the welcome's interval, for at most ``seconds``,
        as the project's client does: presence would otherwise count a quiet socket gone."""
        welcomes = [s.welcome.result() for s in self.sockets.values() if s.welcome.done()]
        every = float(min((w.heartbeat_interval or 30 for w in welcomes), default=30))

        async def beat() -> None:
            ends = time.perf_counter() + seconds
            while time.perf_counter() < ends:
                sockets = list(self.sockets.values())
                if not sockets:
                    await asyncio.sleep(every)
                for sock in sockets:
                    await asyncio.sleep(every / len(sockets))
                    if sock.transport is not None and not sock.closed.done():
                        sock.send({"op": "heartbeat"})

        if self.keepalive_task is None:
            self.keepalive_task = asyncio.create_task(beat(), name="keepalive")
        return every

    def presence_figures(self, sent: dict[str, dict[int, list[SentUpdate]]]) -> PresenceMatch:
        total = PresenceMatch()
        for spec in self.specs:
            if not spec.sees_presence:
                continue
            receipts = self.tally.presence.get(spec.member, {})
            for member, updates in sent.get(spec.topic, {}).items():
                total.add(presence_match(updates, receipts.get(member, [])))
        return total

    async def collect_presence(self, *, sent: dict[str, dict[int, list[SentUpdate]]], wait: float) -> dict[str, Any]:
        """Wait until every receiver has a diff for every accepted update (or the deadline), then count."""
        deadline = time.perf_counter() + wait
        figures = self.presence_figures(sent)
        while figures.lost and time.perf_counter() < deadline:
            await asyncio.sleep(0.25)
            figures = self.presence_figures(sent)
        return {
            "expected": figures.expected,
            "delivered": figures.delivered,
            "lost": figures.lost,
            "superseded": figures.superseded,
            "stale": figures.stale,
            "unmatched": figures.unmatched,
            "unexpected": self.tally.presence_unexpected,
            "frames": self.tally.presence_frames,
            "latencies": figures.latencies,
            "last_receipt": self.tally.last_receipt,
        }

    async def collect(self, *, expected: dict[str, list[int]], wait: float) -> dict[str, Any]:
        """Wait until every socket has every expected seq (or the deadline), then count."""
        wanted = {topic: set(seqs) for topic, seqs in expected.items()}
        deadline = time.perf_counter() + wait

        def missing() -> int:
            return sum(
                len(wanted.get(spec.topic, set()) - self.tally.seen.get(spec.member, set())) for spec in self.specs
            )

        lost = missing()
        while lost and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            lost = missing()
        expected_total = sum(len(wanted.get(spec.topic, ())) for spec in self.specs)
        return {
            "expected": expected_total,
            "delivered": expected_total - lost,
            "lost": lost,
            "duplicates": self.tally.duplicates,
            "replayed": self.tally.replayed,
            "latencies": self.tally.latencies,
            "last_receipt": self.tally.last_receipt,
        }

    def reset(self, *, records: bool = False) -> None:
        self.tally.reset(records=records)
        self.published.clear()
        self.presence_sent.clear()
        self.refused = 0
        self.unanswered = 0

    async def close(self) -> None:
        if self.keepalive_task is not None:
            self.keepalive_task.cancel()
        if self.http_publishers is not None:
            self.http_publishers.close()
        for sock in self.sockets.values():
            if sock.transport is not None:
                sock.transport.send_close(picows.WSCloseCode.OK)
                sock.transport.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.closed for s in self.sockets.values())), 5)
