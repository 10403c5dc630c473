"""Server-side publish over HTTP (issue 20): the planners' ``POST /api/v1/weddings/{id}/events/``
from a load-generator process, paced like their socket publishes, each answered seq counted the
same way (``bench.scenarios.http_publish`` is the scenario).

Each planner is a client of its own (its token, its connections): a keep-alive pool of at most
``CONNECTIONS_PER_PUBLISHER`` HTTP/1.1 connections, opened when a request finds none idle. HTTP/1.1
has one request in flight per connection, so the pool is what lets a planner keep its pace while
answers take longer than its interval. The protocol is h11's (the HTTP/1.1 state machine uvicorn
is built on, pinned in requirements-dev.txt): this needs only POST with a JSON body, and h11 keeps
the client's own cost low.

A request's body is stamped with its planned send time before it waits for a connection, so a
wait for the pool counts in the delivery latency, as it would for the integrator. A POST a
connection failure cut before its answer is sent once more with the same ``Idempotency-Key``:
the product answers a retry with the event the first one stored, never a second event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import h11

if TYPE_CHECKING:
    from bench.loadgen import SocketSpec
    from bench.worker import Worker

CONNECTIONS_PER_PUBLISHER = 4  # a small pool per credential, as an integrator's HTTP client keeps
ANSWER_WAIT = 30.0  # for the answers to a step's last POSTs, after their planned send time
CONNECT_WAIT = 10.0
READ_SIZE = 65536
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})  # the bench loads its own servers only
EVENT_PATH = "/api/v1/weddings/{wedding}/events/"


class ConnectionLost(ConnectionError):
    """The connection ended before the answer was complete."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: one request at a time, each answered in full."""

    def __init__(self, *, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host
        self.protocol = h11.Connection(our_role=h11.CLIENT)

    @classmethod
    async def open(cls, *, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_WAIT)
        return cls(reader=reader, writer=writer, host=f"{host}:{port}")

    @property
    def reusable(self) -> bool:
        """Both sides are ready for the next request (the server did not say ``Connection: close``)."""
        return self.protocol.our_state is h11.IDLE and self.protocol.their_state is h11.IDLE

    async def post(self, *, target: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, bytes]:
        """Send one POST and read its whole answer: (status, body)."""
        request = h11.Request(
            method="POST",
            target=target,
            headers=[("Host", self.host), ("Content-Length", str(len(body))), *headers],
        )
        parts = (self.protocol.send(event) for event in (request, h11.Data(data=body), h11.EndOfMessage()))
        self.writer.write(b"".join(part or b"" for part in parts))
        status = 0
        answer = bytearray()
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                self.protocol.receive_data(await self.reader.read(READ_SIZE))  # b"": the server closed
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionLost("the server closed the connection before answering")
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
        return status, bytes(answer)

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """One planner's connections: at most ``size`` at once, idle ones reused."""

    def __init__(self, *, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.slots = asyncio.Semaphore(size)  # asyncio's semaphore wakes its waiters in order
        self.idle: list[HttpConnection] = []
        self.opened = 0

    @contextlib.asynccontextmanager
    async def connection(self, *, fresh: bool = False) -> AsyncIterator[HttpConnection]:
        """A connection for one request; back to the idle ones after a complete answer, closed
        otherwise (a request cut mid-way leaves the connection in an unknown state)."""
        async with self.slots:
            if fresh:
                for stale in self.idle:
                    stale.close()
                self.idle.clear()
            if self.idle:
                connection = self.idle.pop()
            else:
                connection = await HttpConnection.open(host=self.host, port=self.port)
                self.opened += 1
            answered = False
            try:
                yield connection
                answered = True
            finally:
                if answered and connection.reusable:
                    self.idle.append(connection)
                else:
                    connection.close()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


@dataclass
class HttpPublishers:
    """The HTTP side of one worker's planners, kept across steps so connections stay open."""

    host: str
    port: int
    pools: dict[int, ConnectionPool] = field(default_factory=dict)  # member -> its pool
    keys: itertools.count[int] = field(default_factory=itertools.count)
    # Unique per process: steps and repeats never reuse a key (a reuse would be answered with the
    # first request's event, or refused as a different request under a used key).
    key_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @classmethod
    def for_url(cls, url: str) -> HttpPublishers:
        """From the bench's socket URL (``ws://127.0.0.1:PORT/ws/v1/``): the same server's HTTP side."""
        parts = urlsplit(url)
        if parts.hostname not in LOOPBACK or parts.port is None:
            raise ValueError(f"the bench publishes to its own servers on 127.0.0.1 only, not {url!r}")
        return cls(host=parts.hostname, port=parts.port)

    def pool(self, member: int) -> ConnectionPool:
        if member not in self.pools:
            self.pools[member] = ConnectionPool(host=self.host, port=self.port, size=CONNECTIONS_PER_PUBLISHER)
        return self.pools[member]

    def next_key(self, member: int) -> str:
        return f"bench-{self.key_prefix}-{member}-{next(self.keys)}"

    def connections_opened(self) -> int:
        return sum(pool.opened for pool in self.pools.values())

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def event_request(*, spec: SocketSpec, key: str, sent: float) -> tuple[str, list[tuple[str, str]], bytes]:
    """A planner's POST of the event its socket would publish: ``chat.message`` carrying its send
    time in ``data.text``, as the member the token names."""
    wedding = spec.topic.removeprefix("wedding:")
    body = json.dumps({"type": "chat.message", "data": {"text": f"sent {sent:.6f}"}}).encode()
    headers = [
        ("Authorization", f"Bearer {spec.token}"),
        ("Idempotency-Key", key),
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ]
    return EVENT_PATH.format(wedding=wedding), headers, body


def answered_seq(status: int, body: bytes) -> int | None:
    """The stored event's seq from a 201 answer, else None (a refusal or an unexpected answer)."""
    if status != 201:
        return None
    try:
        seq = json.loads(body).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


async def publish(worker: Worker, *, rate: float, seconds: float) -> dict[str, Any]:
    """Each planner held here POSTs ``rate`` events a second for ``seconds`` (the planners
    staggered over one interval, as their socket publishes are); answers what was stored, by topic,
    with what was refused or not answered and the answers' times."""
    if worker.http_publishers is None:
        worker.http_publishers = HttpPublishers.for_url(worker.urls[0])
    client = worker.http_publishers
    planners = [spec for spec in worker.specs if spec.publisher]
    answer_seconds: list[float] = []
    send_lag_seconds: list[float] = []
    why: list[str] = []
    retries = 0
    started = time.perf_counter()
    total = max(int(rate * seconds), 1)
    deadline = started + seconds + ANSWER_WAIT

    async def one(spec: SocketSpec, planned: float) -> None:
        nonlocal retries
        sent = time.time()
        key = client.next_key(spec.member)
        target, headers, body = event_request(spec=spec, key=key, sent=sent)
        pool = client.pool(spec.member)
        for attempt in range(2):  # one retry, same key: the product stores the event once
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    async with pool.connection(fresh=attempt > 0) as connection:
                        if attempt == 0:  # how late it goes out: the loop's lag, any wait for the pool
                            send_lag_seconds.append(time.perf_counter() - planned)
                        status, answer = await connection.post(target=target, headers=headers, body=body)
            except TimeoutError:  # before OSError, of which it is a subclass
                worker.unanswered += 1  # maybe stored, maybe not: its seq is not expected of anyone
                _note(why, "unanswered: no answer in time")
                return
            except (ConnectionError, OSError, h11.ProtocolError) as error:
                if attempt == 0:
                    retries += 1
                    continue
                worker.unanswered += 1
                _note(why, f"unanswered: {type(error).__name__}: {error}")
                return
            break
        answer_seconds.append(time.time() - sent)
        seq = answered_seq(status, answer)
        if seq is None:
            worker.refused += 1
            _note(why, f"{status}: {answer[:160].decode(errors='replace')}")
            return
        worker.published.setdefault(spec.topic, []).append(seq)

    async def planner(spec: SocketSpec, offset: float) -> None:
        sends: list[asyncio.Task[None]] = []
        for n in range(total):
            planned = started + offset + n / rate
            await asyncio.sleep(max(planned - time.perf_counter(), 0))
            sends.append(asyncio.create_task(one(spec, planned)))
        await asyncio.gather(*sends)

    spread = 1 / rate
    await asyncio.gather(*(planner(spec, spread * i / max(len(planners), 1)) for i, spec in enumerate(planners)))
    return {
        "published": {topic: list(seqs) for topic, seqs in worker.published.items()},
        "refused": worker.refused,
        "unanswered": worker.unanswered,
        "why": why,
        "retries": retries,
        "answer_seconds": answer_seconds,
        "send_lag_seconds": send_lag_seconds,
        "connections": client.connections_opened(),
    }


def _loop_time(deadline: float) -> float:
    """A ``time.perf_counter`` deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + deadline - time.perf_counter()


def _note(why: list[str], reason: str) -> None:
    if len(why) < 5:
        why.append(reason[:200])
