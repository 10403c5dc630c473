"""`make cluster` (bin/cluster.py, docs/deployment.md) starts the deployed layout on this machine:
its --check proves it (two nodes through nginx, an event across them before and after the Redis
master is killed, the worker answering through the sentinels) and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings

from tests.realtime.nodes import ROOT
from tests.servers import free_port

pytestmark = [
    pytest.mark.requires_postgres,
    pytest.mark.requires_redis,
    pytest.mark.requires_nginx,
    pytest.mark.requires_redis_sentinel,
]


def test_the_cluster_rehearsal_proves_its_layout_and_cleans_up() -> None:
    server = urlsplit(settings.WEDSYNC_TEST_SERVICE_URLS["postgres"])
    database_url = urlunsplit(server._replace(path="/wedsync_cluster_check"))
    process = subprocess.Popen(
        [sys.executable, "bin/cluster.py", "--check", "--port", str(free_port()), "--database-url", database_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its group: what it started goes with it if it must be stopped
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # it stops what it started, each by its PID
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"the check did not finish within 240 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    lines = stdout.splitlines()
    assert "cluster: the planner and the couple came through nginx to n1, n2" in lines
    assert any(line.startswith("cluster: an event after the failover reached the couple") for line in lines)
    assert "cluster: the sentinels promoted its replica" in lines
    assert "cluster: the worker answered a ping through the broker after the failover" in lines
    assert lines[-2:] == ["cluster: check: ok", "cluster: stopped"]
    admin = urlunsplit(server._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin) as connection:
        left = connection.execute("SELECT 1 FROM pg_database WHERE datname = 'wedsync_cluster_check'").fetchone()
    assert left is None, "the check dropped its database"
