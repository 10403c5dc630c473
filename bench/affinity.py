"""Where HAProxy puts a Saturday's sockets, by three keys (decision 0043): none (``leastconn``,
the ``nodes`` backend), the user (``?u=``, the ``sockets_by_user`` backend as shipped) and, to see
what wedding affinity would buy, each socket's first wedding given as ``u``.

It runs deploy/haproxy/wedsync.cfg (bind and servers replaced) in front of stand-in nodes that only
say their name (placement is all HAProxy decides; nothing of the product runs), sends one request
per socket (answered and closed at once, so neither ``leastconn`` nor the load bound, which count
open connections, act as they do among open sockets), and reports per key:

- ``feeds_per_wedding``: nodes holding a subscriber of a wedding, on average: each event crosses
  the channel layer once to each of them, and each decodes it and runs its fan-out;
- ``people_split``: people whose devices landed on more than one node;
- ``busiest_share``: the busiest node's sockets over the average (1.0 is even).

The population is a June Saturday's shape (``--weddings``): 200 members a wedding, of them a planner
who plans three of the day's weddings, fifteen vendors who work two, the couple and guests; a
quarter of the people bring a second device.

    python -m bench.affinity [--nodes 3] [--weddings 60]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = 200
VENDORS = 15  # per wedding, each working two of the day's weddings
PLANNER_WEDDINGS = 3
SECOND_DEVICE_SHARE = 0.25


@dataclass
class Person:
    user: int
    weddings: list[int] = field(default_factory=list)
    devices: int = 1


def saturday(weddings: int, seed: int = 7) -> list[Person]:
    rng = random.Random(seed)  # noqa: S311  a population's shape, not a secret
    people: list[Person] = []
    next_user = iter(range(1, 10**9))
    for first in range(0, weddings, PLANNER_WEDDINGS):
        people.append(Person(next(next_user), list(range(first, min(first + PLANNER_WEDDINGS, weddings)))))
    vendor_slots = [w for w in range(weddings) for _ in range(VENDORS)]
    rng.shuffle(vendor_slots)
    while vendor_slots:
        pair = {vendor_slots.pop()}
        if vendor_slots and vendor_slots[-1] not in pair:
            pair.add(vendor_slots.pop())
        people.append(Person(next(next_user), sorted(pair)))
    for wedding in range(weddings):
        people += [Person(next(next_user), [wedding]) for _ in range(MEMBERS - 1 - VENDORS)]  # couple, guests
    for person in people:
        person.devices = 2 if rng.random() < SECOND_DEVICE_SHARE else 1
    return people


class _Named(http.server.BaseHTTPRequestHandler):
    name = ""

    def do_GET(self) -> None:
        body = self.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # a refused connect would be redispatched to another node, and counted there

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's checks hang up without reading: nothing to report


@contextlib.contextmanager
def stand_in_nodes(count: int) -> Iterator[list[int]]:
    servers = []
    for index in range(count):
        handler = type(f"Node{index + 1}", (_Named,), {"name": f"n{index + 1}"})
        server = _Server(("127.0.0.1", _free_port()), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield [server.server_address[1] for server in servers]
    finally:
        for server in servers:
            server.shutdown()


def haproxy_config(*, port: int, node_ports: list[int]) -> str:
    """The shipped config, bound to loopback, with one server line per stand-in node in each backend."""
    text = (ROOT / "deploy" / "haproxy" / "wedsync.cfg").read_text()
    text, binds = re.subn(r"(?m)^    bind :80$", f"    bind 127.0.0.1:{port}", text)
    text = re.sub(r"hdr Host wedsync\.example\.com$", "hdr Host localhost", text, flags=re.M)
    blocks = {}
    for backend in ("nodes", "sockets_by_user"):
        match = re.search(rf"(?ms)^backend {backend}\n.*?(^    server n1 .*?)(?=^\S|\Z)", text)
        if match is None or binds != 1:
            raise SystemExit("deploy/haproxy/wedsync.cfg changed shape: update bench/affinity.py")
        first = match.group(1).splitlines()[0]
        tail = first.split(":8000", 1)[1]
        blocks[match.group(1)] = "".join(
            f"    server n{i + 1} 127.0.0.1:{p}{tail.replace('nodes/n1', f'nodes/n{i + 1}')}\n"
            for i, p in enumerate(node_ports)
        )
    for old, new in blocks.items():
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def haproxy(node_ports: list[int]) -> Iterator[int]:
    binary = shutil.which("haproxy")
    if binary is None:
        raise SystemExit("haproxy is not installed (Debian's haproxy package)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "haproxy.cfg"
        config.write_text(haproxy_config(port=port, node_ports=node_ports))
        process = subprocess.Popen(  # noqa: S603  Debian's haproxy on a config of our own
            [binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # up, and every stand-in passed its /readyz checks
                with contextlib.suppress(OSError):
                    names = {_get(port, "/healthz") for _ in range(4 * len(node_ports))}
                    if len(names) == len(node_ports):
                        break
                time.sleep(0.2)
            time.sleep(2.5)  # rise 2 at 1 s: the hashed backend's tracked servers are up too
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


def _get(port: int, path: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": "localhost"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  loopback
        return str(response.read().decode())


def placement(port: int, people: list[Person], key: str) -> dict[str, float]:
    """Each device's node through HAProxy, keyed by ``key`` (none, user, wedding)."""
    homes: dict[int, set[str]] = {}
    sockets_on: dict[str, int] = {}
    feeds: set[tuple[int, str]] = set()
    for person in people:
        for _device in range(person.devices):
            query = {"none": "", "user": f"?u={person.user}", "wedding": f"?u=w{person.weddings[0]}"}[key]
            node = _get(port, f"/ws/v1/{query}")
            homes.setdefault(person.user, set()).add(node)
            sockets_on[node] = sockets_on.get(node, 0) + 1
            feeds.update((wedding, node) for wedding in person.weddings)
    weddings = {wedding for person in people for wedding in person.weddings}
    average = sum(sockets_on.values()) / len(sockets_on)
    return {
        "feeds_per_wedding": round(len(feeds) / len(weddings), 3),
        "people_split": sum(1 for nodes in homes.values() if len(nodes) > 1),
        "people_with_two_devices": sum(1 for person in people if person.devices > 1),
        "busiest_share": round(max(sockets_on.values()) / average, 3),
        "sockets": sum(sockets_on.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--weddings", type=int, default=60)
    options = parser.parse_args()
    people = saturday(options.weddings)
    with stand_in_nodes(options.nodes) as node_ports, haproxy(node_ports) as port:
        figures = {key: placement(port, people, key) for key in ("none", "user", "wedding")}
    print(json.dumps({"nodes": options.nodes, "weddings": options.weddings, "by_key": figures}, indent=2))


if __name__ == "__main__":
    main()
