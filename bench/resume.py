"""Resuming a worker's sockets as the project's clients do (``bench.worker.Worker``'s storms): all
of them cut at once (``drop_and_resume``), or those of a killed node (``lose_node``), each reopened
with ``since`` after the clients' backoff, or a little past a refusal's ``retry_after``. With
several nodes, where each socket goes (``node_order``) plays the balancer's part (decision 0045)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime.client import reconnect_delay

if TYPE_CHECKING:
    from bench.loadgen import SocketSpec
    from bench.worker import Worker


class RefusedForNow(Exception):
    """The server answered the handshake with an error frame (shed, draining, rate limited) instead
    of a welcome; ``retry_after`` is the seconds it asked for."""

    def __init__(self, code: str, retry_after: float | None) -> None:
        super().__init__(f"refused: {code} (retry_after {retry_after})")
        self.code = code
        self.retry_after = retry_after
        self.node: int | None = None  # which node refused (an index in the worker's URLs)


class RefusedForGood(Exception):
    """An error frame instead of a welcome that the clients do not retry (say ``forbidden``)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"refused for good: {code}")
        self.code = code


# Refusals before the welcome that the clients try again after (1013, 1001): shed, not ready,
# draining, too many handshakes from one address.
RETRYABLE_REFUSALS = frozenset({"unavailable", "rate_limited"})


def node_order(member: int, nodes: int) -> list[int]:
    """The nodes a member's socket tries, in order: its own (``member % nodes``) first, then the
    others rotated by the member, so that a lost node's sockets spread evenly over the rest, as a
    balancer's consistent hash by user spreads them (deploy/haproxy, decision 0043)."""
    first = member % nodes
    others = [(first + step) % nodes for step in range(1, nodes)]
    shift = (member // nodes) % max(nodes - 1, 1)
    return [first, *others[shift:], *others[:shift]]


def failure_text(error: BaseException) -> str:
    """What failed and where, short enough to report."""
    where = traceback.extract_tb(error.__traceback__)[-1]
    return f"{type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})"[:300]


@dataclass
class Tries:
    """What the resumes of one storm tried: attempts, refusals among them, the first failures."""

    attempts: int = 0
    refusals: int = 0  # an error frame instead of a welcome
    failures: list[str] = field(default_factory=list)

    def failed(self, text: str) -> None:
        if len(self.failures) < 5:
            self.failures.append(text)


async def drop_and_resume(worker: Worker, *, deadline: float) -> dict[str, Any]:
    """Cut every socket at once (no close handshake, like a venue's Wi-Fi going down), then
    resume each (:func:`resume_one`) until ``deadline`` seconds have passed."""
    for sock in worker.sockets.values():
        if sock.transport is not None:
            sock.transport.disconnect(graceful=False)
    return await _resume_all(worker, worker.specs, deadline=deadline)


async def lose_node(worker: Worker, *, node: int, deadline: float) -> dict[str, Any]:
    """The node at ``worker.urls[node]`` was killed: each of its sockets, once it has seen its
    connection go, resumes (:func:`resume_one`). The others stay."""
    lost = [spec for spec in worker.specs if worker.node_of.get(spec.member) == node]
    figures = await _resume_all(worker, lost, deadline=deadline, notice=True)
    held = list(worker.node_of.values())
    figures["nodes"] = {str(n): held.count(n) for n in range(len(worker.urls))}
    return figures


async def _resume_all(
    worker: Worker, specs: list[SocketSpec], *, deadline: float, notice: bool = False
) -> dict[str, Any]:
    worker.down.clear()  # learnt afresh by each storm, as a balancer's checks follow the nodes
    tries = Tries()
    done_at: list[float] = []
    noticed_at: list[float] = []
    started = time.perf_counter()

    async def one(spec: SocketSpec) -> None:
        if notice:  # a killed node's sockets learn it from their own connection, as a phone does
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(worker.sockets[spec.member].closed), deadline)
                noticed_at.append(time.perf_counter() - started)
        if await resume_one(worker, spec, started=started, deadline=deadline, tries=tries):
            done_at.append(time.perf_counter() - started)
        else:
            worker.node_of.pop(spec.member, None)  # not back on any node

    await asyncio.gather(*(one(spec) for spec in specs))
    done_at.sort()
    return {
        "connected": len(done_at),
        "failed": len(specs) - len(done_at),
        "failures": tries.failures,
        "attempts": tries.attempts,
        "refusals": tries.refusals,
        "seconds": done_at[-1] if done_at else None,
        "completion_times": done_at,
        "noticed_seconds": max(noticed_at, default=None),
    }


async def resume_one(worker: Worker, spec: SocketSpec, *, started: float, deadline: float, tries: Tries) -> bool:
    """Reopen ``spec``'s socket with ``since`` as realtime.client does: after ``reconnect_delay``
    (backoff with full jitter), or a little past the ``retry_after`` of a refusal, whichever is
    longer, again after each failure, until ``deadline`` seconds after ``started``."""
    not_before = 0.0  # what a refusal's retry_after asked for
    refused_by = None
    for attempt in itertools.count(1):
        await asyncio.sleep(max(reconnect_delay(attempt), not_before))
        if time.perf_counter() - started > deadline:
            tries.failed(f"gave up after {attempt - 1} attempts")
            return False
        tries.attempts += 1
        not_before = 0.0
        try:
            await worker._open(spec, resume=True, refused_by=refused_by)
        except RefusedForNow as refused:
            tries.refusals += 1
            refused_by = refused.node
            if refused.retry_after:  # as the client: a little past it, so refused phones spread out
                not_before = refused.retry_after + random.uniform(0.1, 0.5)  # noqa: S311 - jitter
            tries.failed(f"attempt {attempt}: {refused}"[:200])
            continue
        except RefusedForGood as refused:
            tries.failed(f"attempt {attempt}: {refused}"[:200])
            return False
        except Exception as error:
            tries.failed(f"attempt {attempt}: {failure_text(error)}")
            continue
        return True
    raise AssertionError("unreachable")
