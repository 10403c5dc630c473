"""The Celery worker's metrics: every task run counted and timed (signals), and ``/metrics``
served on ``WORKER_METRICS_PORT``, since a worker answers no HTTP of its own.

The port serves Django's own ``/metrics`` view and nothing else, so a scrape is checked (bearer
token, allowed addresses) and a refusal audited exactly as on a daphne node (decision 0036).
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from celery import Task
from celery.signals import task_postrun, task_prerun

from monitoring.metrics import TASK_DURATION, TASK_RUNS

logger = structlog.get_logger(__name__)

OUR_TASK_PREFIXES = ("wedsync.", "realtime.", "presence.", "monitoring.", "records.")
_OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def task_label(name: str | None) -> str:
    """A task's name as a label: ours by name (a fixed set), anything else as ``other``."""
    return name if name is not None and name.startswith(OUR_TASK_PREFIXES) else "other"


class TaskTimer:
    """Starts and ends of task runs, by task id (a prerun without its postrun, a worker killed
    mid-task, is forgotten with the process)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def started(self, sender: Task[Any, Any] | None = None, task_id: str = "", **_: Any) -> None:
        self._started[task_id] = time.monotonic()

    def ended(
        self, sender: Task[Any, Any] | None = None, task_id: str = "", state: str | None = None, **_: Any
    ) -> None:
        began = self._started.pop(task_id, None)
        label = task_label(getattr(sender, "name", None))
        TASK_RUNS.labels(label, _OUTCOMES.get(state or "", "failed")).inc()
        if began is not None:
            TASK_DURATION.labels(label).observe(time.monotonic() - began)


def task_metrics_connect() -> TaskTimer:
    """Count and time every task this process runs (weak=False: the timer lives as long as the
    signals; connecting again is a no-op, by dispatch_uid)."""
    timer = TaskTimer()
    task_prerun.connect(timer.started, weak=False, dispatch_uid="wedsync-task-metrics-prerun")
    task_postrun.connect(timer.ended, weak=False, dispatch_uid="wedsync-task-metrics-postrun")
    return timer


def metrics_only(app: WsgiApp) -> WsgiApp:
    """``app`` for ``GET /metrics``; 404 for any other path, so the port is no second front door."""

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"this port serves /metrics only\n"]
        return app(environ, start_response)

    return serve


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every 15 s are not news; refusals are audited by the view


def worker_metrics_serve(*, address: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` on ``address:port`` from a daemon thread; returns the server (its
    ``server_port`` is the bound one when ``port`` is 0; ``shutdown()`` stops it)."""
    from django.core.wsgi import get_wsgi_application

    server = make_server(
        address, port, metrics_only(get_wsgi_application()), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    logger.info("worker.metrics_serving", address=address, port=server.server_port)
    return server
