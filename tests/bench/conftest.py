"""The ceiling as a server to test the load generator against (no database, no Redis)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from bench.servers import ROOT


@contextmanager
def ceiling_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ceiling on a free loopback port: its socket URL and its process (stopped by its PID)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bench.ceiling", "--port", str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}/ws/v1/", server
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def ceiling_url() -> Iterator[str]:
    with ceiling_server() as (url, _server):
        yield url


@pytest.fixture
def three_ceilings() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Three ceilings standing in for three nodes (each its own room: no layer between them)."""
    with ExitStack() as stack:
        yield [stack.enter_context(ceiling_server()) for _ in range(3)]
