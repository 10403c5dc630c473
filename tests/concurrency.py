"""Running the same database work in several threads at once, released together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def race(work: Callable[[], T], *, threads: int) -> list[T | BaseException]:
    """Run ``work`` in ``threads`` threads started together; each result, or the exception raised."""
    start = threading.Barrier(threads)
    results: list[T | BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append(work())
        except Exception as exc:  # the caller inspects refusals as results
            results.append(exc)
        finally:
            connection.close()  # each thread has its own connection; leave none open

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results
