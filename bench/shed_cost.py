"""What a shed connect costs a node against an accepted one (decision 0041): one product node, a
planner's socket held open, then ``--guests`` guests' connects (``--concurrency`` at a time) twice:
with a budget of 1 socket, so that every guest is refused (1013, shed), and with shedding off, so
that every guest is welcomed (then closed). Reported: the node's CPU per connect in each case.

    python -m bench.shed_cost [--guests 300] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

from bench import servers


async def _one(url: str, token: str, device: int) -> int | None:
    """A guest's connect: the close code if the node closed it after its first frame, None if welcomed."""
    async with connect(f"{url}?device=g{device}", subprotocols=["wedsync.v1", f"bearer.{token}"]) as ws:  # type: ignore[list-item]
        first = json.loads(await ws.recv())
        if first.get("op") == "welcome":
            return None
        await ws.wait_closed()
        return ws.close_code


async def _connects(url: str, tokens: list[str], concurrency: int) -> list[int | None]:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int, token: str) -> int | None:
        async with gate:
            return await _one(url, token, n)

    return list(await asyncio.gather(*(one(n, token) for n, token in enumerate(tokens))))


async def _measure(env: dict[str, str], planner: str, guests: list[str], concurrency: int) -> dict[str, Any]:
    with servers.running("product", env) as server:
        async with connect(server.url, subprotocols=["wedsync.v1", f"bearer.{planner}"]) as held:  # type: ignore[list-item]
            if json.loads(await held.recv())["op"] != "welcome":
                raise RuntimeError("the planner's socket was not welcomed: see var/bench-product.log")
            await _connects(server.url, guests[:20], concurrency)  # warm the node's pools and caches
            before = servers.process_cpu_seconds(server.pid)
            codes = await _connects(server.url, guests, concurrency)
            cpu = servers.process_cpu_seconds(server.pid) - before
    return {
        "connects": len(codes),
        "welcomed": codes.count(None),
        "refused_1013": codes.count(1013),
        "server_cpu_ms_per_connect": round(cpu * 1000 / len(codes), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    options = parser.parse_args()
    env = servers.environment()
    weddings = servers.seed(env, weddings=2, members=200)
    members = [member for wedding in weddings for member in wedding["members"]]
    planner = next(member["token"] for member in members if member["role"] == "planner")
    guests = [member["token"] for member in members if member["role"] == "guest"][: options.guests]
    figures = {
        "shed": asyncio.run(_measure({**env, "REALTIME_SOCKET_BUDGET": "1"}, planner, guests, options.concurrency)),
        "accepted": asyncio.run(_measure({**env, "REALTIME_SOCKET_BUDGET": "0"}, planner, guests, options.concurrency)),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
