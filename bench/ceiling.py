"""The ceiling: a minimal pure-asyncio WebSocket broadcaster doing the same fan-out as the product.

It speaks just enough of protocol v1 for the load generator (welcome, subscribe, publish, event
frames of the same shape, a publish's ``to`` (``role:<role>`` / ``member:<id>``, the sender
included) choosing who gets it; ``presence`` ops relayed at once as ``presence_diff`` frames to the
room's sockets that view presence) and does nothing else: no authentication, storage, routing,
merging, batching or limits. Who a socket is (member and role, for presence) it takes from the
load generator's ``?bench_member=&bench_role=`` query, since it has no auth.
What the product does on top costs the difference between its figures and these.

    .venv/bin/python -m bench.ceiling --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import defaultdict
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.typing import Subprotocol

_topics: dict[str, set[ServerConnection]] = defaultdict(set)
_viewers: dict[str, set[ServerConnection]] = defaultdict(set)  # sockets with view_presence (not guests)
_who: dict[ServerConnection, tuple[str, str]] = {}  # socket -> (member, role), from the query
_seqs: dict[str, int] = defaultdict(int)
# Kept so that a resuming socket gets what it missed, as the product does; bounded like its replay.
_history: dict[str, list[str]] = defaultdict(list)
HISTORY_MAX = 5000


async def _handler(ws: ServerConnection) -> None:
    await ws.send(json.dumps({"op": "welcome", "session": str(id(ws)), "heartbeat_interval": 30}))
    query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
    member, role = query.get("bench_member", ["0"])[0], query.get("bench_role", [""])[0]
    _who[ws] = (member, role)
    joined: set[str] = set()
    try:
        async for raw in ws:
            frame = json.loads(raw)
            op, ref, topic = frame.get("op"), frame.get("ref"), frame.get("topic", "")
            if op == "subscribe":
                _topics[topic].add(ws)
                if role != "guest":
                    _viewers[topic].add(ws)
                joined.add(topic)
                await ws.send(json.dumps({"op": "reply", "ref": ref, "status": "ok", "data": {"seq": _seqs[topic]}}))
                since = frame.get("since")
                if since is not None:
                    history = _history[topic]
                    first = _seqs[topic] - len(history) + 1  # seq of history[0]
                    for encoded in history[max(since + 1 - first, 0) :]:
                        await ws.send(encoded.replace('"replay": false', '"replay": true', 1))
            elif op == "publish":
                _seqs[topic] += 1
                seq = _seqs[topic]
                await ws.send(json.dumps({"op": "reply", "ref": ref, "status": "ok", "data": {"seq": seq}}))
                event = {
                    "op": "event",
                    "topic": topic,
                    "seq": seq,
                    "type": frame.get("type"),
                    "priority": "normal",
                    "from": None,
                    "data": frame.get("data"),
                    "at": datetime.now(UTC).isoformat(),
                    "replay": False,
                }
                encoded = json.dumps(event)
                _history[topic].append(encoded)
                del _history[topic][:-HISTORY_MAX]
                broadcast(_audience(ws, topic, frame.get("to")), encoded)  # encoded once, written to each
            elif op == "presence" and topic in joined:
                await ws.send(json.dumps({"op": "reply", "ref": ref, "status": "ok", "data": {}}))
                diff = {
                    "op": "presence_diff",
                    "topic": topic,
                    "joins": {},
                    "leaves": {},
                    "updates": {member: frame.get("state")},
                }
                broadcast(_viewers[topic], json.dumps(diff))
            else:
                await ws.send(json.dumps({"op": "reply", "ref": ref, "status": "ok", "data": {}}))
    except websockets.ConnectionClosed:
        pass
    finally:
        _who.pop(ws, None)
        for topic in joined:
            _topics[topic].discard(ws)
            _viewers[topic].discard(ws)


def _audience(sender: ServerConnection, topic: str, to: list[str] | None) -> set[ServerConnection]:
    """The room, or the sockets ``to`` names and the sender."""
    if not to:
        return _topics[topic]
    targets = set(to)
    chosen = set()
    for ws in _topics[topic]:
        member, role = _who.get(ws, ("", ""))
        if ws is sender or f"member:{member}" in targets or f"role:{role}" in targets:
            chosen.add(ws)
    return chosen


async def _serve(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(_handler, host, port, subprotocols=[Subprotocol("wedsync.v1")], max_size=65536, ping_interval=20):
        await stop


def main() -> None:
    parser = argparse.ArgumentParser(description="Pure-asyncio broadcaster (the benchmark's ceiling).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
