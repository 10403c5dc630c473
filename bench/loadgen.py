"""The load generator: many protocol-v1 sockets per process, driven from the bench's main process.

Each worker process holds a share of the sockets (picows: a C-speed client, so the generator is
not what saturates first) and obeys commands sent over a pipe: connect, publish, drop-and-resume,
collect. Every event carries its send time in ``data.text``; a receiver records, per socket, the
seqs it saw (so losses and duplicates are counted against what the publishers were told was
stored, never assumed) and the latency of every live delivery. Loops are bounded by counts and
deadlines; the only address is the 127.0.0.1 URL the bench passes in. This module is the main
process's side; the sockets and what they record are :mod:`bench.worker`'s.

Publishing over HTTP (``http_publish``, :mod:`bench.http_publishers`): the publishers' process
POSTs the same events to the same server's HTTP side; each answered seq is expected like a socket
publish's.

Presence churn (``presence`` / ``collect_presence``): every socket sends ``presence`` ops at a
paced rate, its n-th update setting a state that encodes n; receivers with ``view_presence``
record, per member named in a ``presence_diff``, when which encoded state arrived, and
:mod:`bench.presence_match` pairs those receipts with the updates sent (see there).
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench import http_publishers, records, resume
from bench.presence_match import SentUpdate
from bench.worker import Worker

COMMAND_WAIT = 300.0  # for a worker's answer to one command


@dataclass(frozen=True)
class SocketSpec:
    member: int
    token: str
    topic: str
    publisher: bool = False
    role: str = ""  # the member's role in the wedding: who views presence (PROTOCOL.md section 6)

    @property
    def sees_presence(self) -> bool:
        """``view_presence`` is every role's but the guests' (wedsync/permissions.py)."""
        return self.role != "guest"

    @property
    def query(self) -> str:
        """For the ceiling and the baseline, which have no auth: who the socket is (the product
        ignores these parameters)."""
        return f"?bench_member={self.member}&bench_role={self.role}" if self.role else ""


def _serve_commands(conn: Connection, urls: list[str], specs: list[SocketSpec]) -> None:
    async def loop() -> None:
        worker = Worker(urls, specs)
        running = asyncio.get_running_loop()
        while True:
            number, command, options = await running.run_in_executor(None, conn.recv)
            conn.send(number)  # each answer follows its command's number, so a late one is known
            if command == "connect":
                conn.send(await worker.connect(**options))
            elif command == "reset":
                worker.reset(**options)
                conn.send({})
            elif command == "publish":
                conn.send(await worker.publish(**options))
            elif command == "storm":
                conn.send(await resume.drop_and_resume(worker, **options))
            elif command == "lose_node":
                conn.send(await resume.lose_node(worker, **options))
            elif command == "collect":
                conn.send(await worker.collect(**options))
            elif command == "presence":
                conn.send(await worker.presence(**options))
            elif command == "collect_presence":
                conn.send(await worker.collect_presence(**options))
            elif command == "records_edit":
                conn.send(await records.edit(worker, **options))
            elif command == "http_publish":
                conn.send(await http_publishers.publish(worker, **options))
            elif command == "collect_records":
                conn.send(await records.collect(worker, **options))
            elif command == "keepalive":
                conn.send({"every": worker.keepalive(**options)})
            elif command == "cpu":
                conn.send({"cpu_seconds": os.times().user + os.times().system})
            elif command == "close":
                await worker.close()
                conn.send({})
                return

    asyncio.run(loop())


class LoadGenerator:
    """The main process's handle on its worker processes: each command goes to all, answers merge.
    With several URLs (nodes), each socket starts on its own node and moves on as
    :func:`bench.resume.node_order` says when that one refuses connections."""

    def __init__(self, url: str | list[str], specs: list[SocketSpec], *, workers: int) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        context = multiprocessing.get_context("spawn")  # a clean interpreter per worker
        self.pipes: list[Connection] = []
        self._numbers = itertools.count(1)
        self.processes: list[multiprocessing.process.BaseProcess] = []
        shares = [specs[i::workers] for i in range(workers)]
        for share in shares:
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve_commands, args=(theirs, urls, share), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def _all(self, command: str, **options: Any) -> list[dict[str, Any]]:
        number = next(self._numbers)
        for pipe in self.pipes:
            pipe.send((number, command, options))
        answers: list[dict[str, Any]] = []
        for pipe in self.pipes:
            while True:  # skip what answers an earlier command that was given up on
                if not pipe.poll(COMMAND_WAIT):
                    raise RuntimeError(f"a load-generator worker did not answer {command!r} in {COMMAND_WAIT} s")
                answered = pipe.recv()
                if answered == number:
                    break
            answers.append(pipe.recv())
        return answers

    def connect(self, *, concurrency: int = 50, limit: int | None = None) -> dict[str, Any]:
        """Connect the next ``limit`` sockets, or all the rest. Each worker takes an equal share,
        rounded up, so up to ``workers - 1`` more than ``limit`` may connect."""
        share = None if limit is None else -(-limit // len(self.pipes))
        return _merge_connects(self._all("connect", concurrency=concurrency, limit=share))

    def storm(self, *, deadline: float = 60.0) -> dict[str, Any]:
        """Every socket cut at once and resumed (bench.resume.drop_and_resume)."""
        return _merge_resumes(self._all("storm", deadline=deadline))

    def lose_node(self, *, node: int, deadline: float = 60.0) -> dict[str, Any]:
        """The sockets of the killed node ``node`` resumed elsewhere (bench.resume.lose_node); ``nodes``:
        how many sockets each node holds after."""
        merged = _merge_resumes(answers := self._all("lose_node", node=node, deadline=deadline))
        merged["nodes"] = {key: sum(a["nodes"].get(key, 0) for a in answers) for key in answers[0]["nodes"]}
        return merged

    def reset(self, *, records: bool = False) -> None:
        """Forget what was received; ``records``: also key the shared-records events (bench.records)."""
        self._all("reset", records=records)

    def publish(self, *, rate: float = 0, seconds: float = 0, burst: int = 0) -> dict[str, list[int]]:
        merged: dict[str, list[int]] = {}
        refused = 0
        for answer in self._all("publish", rate=rate, seconds=seconds, burst=burst):
            refused += answer["refused"] + answer["unanswered"]
            for topic, seqs in answer["published"].items():
                merged.setdefault(topic, []).extend(seqs)
        if refused:
            merged["_refused"] = [refused]
        return merged

    def http_publish(self, *, rate: float, seconds: float) -> dict[str, Any]:
        """The publishers' paced POSTs of the same events (bench.http_publishers.publish): what was
        stored, by topic, as ``publish`` answers it, with the refusals and the answers' times."""
        merged: dict[str, list[int]] = {}
        totals = {"refused": 0, "unanswered": 0, "retries": 0, "connections": 0}
        why: list[str] = []
        answer_seconds: list[float] = []
        send_lag_seconds: list[float] = []
        for answer in self._all("http_publish", rate=rate, seconds=seconds):
            for topic, seqs in answer["published"].items():
                merged.setdefault(topic, []).extend(seqs)
            for key in totals:
                totals[key] += answer[key]
            why += answer["why"]
            answer_seconds += answer["answer_seconds"]
            send_lag_seconds += answer["send_lag_seconds"]
        return {
            "published": merged,
            **totals,
            "why": why[:5],
            "answer_seconds": sorted(answer_seconds),
            "send_lag_seconds": sorted(send_lag_seconds),
        }

    def collect(self, *, expected: dict[str, list[int]], timeout: float) -> dict[str, Any]:
        answers = self._all("collect", expected=expected, wait=timeout)
        return {
            "expected": sum(a["expected"] for a in answers),
            "delivered": sum(a["delivered"] for a in answers),
            "lost": sum(a["lost"] for a in answers),
            "duplicates": sum(a["duplicates"] for a in answers),
            "replayed": sum(a["replayed"] for a in answers),
            "latencies": sorted(lat for a in answers for lat in a["latencies"]),
            "last_receipt": max(a["last_receipt"] for a in answers),
        }

    def records_edit(self, **options: Any) -> list[dict[str, Any]]:
        """Paced edits by the editors held here (bench.records.edit); answers every edit."""
        return [row for answer in self._all("records_edit", **options) for row in answer["edits"]]

    def collect_records(self, *, expected: records.Expected, timeout: float) -> dict[str, Any]:
        answers = self._all("collect_records", expected=expected, wait=timeout)
        merged: dict[str, Any] = {
            key: sum(a[key] for a in answers) for key in answers[0] if key not in ("latencies", "last_receipt")
        }
        merged["latencies"] = sorted(lat for a in answers for lat in a["latencies"])
        merged["last_receipt"] = max(a["last_receipt"] for a in answers)
        return merged

    def keepalive(self, *, seconds: float = 600.0) -> float:
        """Heartbeats from every socket (see Worker.keepalive); answers the interval in seconds."""
        return min(float(answer["every"]) for answer in self._all("keepalive", seconds=seconds))

    def presence(self, *, interval: float, seconds: float) -> dict[str, Any]:
        """Every socket's paced presence updates; answers what was sent, by topic and member."""
        sent: dict[str, dict[int, list[SentUpdate]]] = {}
        refused = unanswered = 0
        why: list[str] = []
        for answer in self._all("presence", interval=interval, seconds=seconds):
            refused += answer["refused"]
            unanswered += answer["unanswered"]
            why += answer["why"]
            for topic, members in answer["sent"].items():
                sent.setdefault(topic, {}).update(members)
        return {"sent": sent, "refused": refused, "unanswered": unanswered, "why": why[:5]}

    def collect_presence(self, *, sent: dict[str, dict[int, list[SentUpdate]]], timeout: float) -> dict[str, Any]:
        answers = self._all("collect_presence", sent=sent, wait=timeout)
        merged: dict[str, Any] = {
            key: sum(a[key] for a in answers)
            for key in ("expected", "delivered", "lost", "superseded", "stale", "unmatched", "unexpected", "frames")
        }
        merged["latencies"] = sorted(lat for a in answers for lat in a["latencies"])
        merged["last_receipt"] = max(a["last_receipt"] for a in answers)
        return merged

    def cpu_seconds(self) -> float:
        return float(sum(answer["cpu_seconds"] for answer in self._all("cpu")))

    def close(self) -> None:
        try:
            self._all("close")
        finally:
            for process in self.processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()


def _merge_resumes(answers: list[dict[str, Any]]) -> dict[str, Any]:
    merged = _merge_connects(answers)
    merged["attempts"] = sum(a["attempts"] for a in answers)
    merged["refusals"] = sum(a["refusals"] for a in answers)
    noticed = [a["noticed_seconds"] for a in answers if a["noticed_seconds"] is not None]
    merged["noticed_seconds"] = max(noticed, default=None)
    return merged


def _merge_connects(answers: list[dict[str, Any]]) -> dict[str, Any]:
    times = sorted(t for a in answers for t in a["completion_times"])
    return {
        "connected": sum(a["connected"] for a in answers),
        "failed": sum(a["failed"] for a in answers),
        "failures": [f for a in answers for f in a["failures"]][:5],
        "seconds": times[-1] if times else None,
        "completion_times": times,
    }
