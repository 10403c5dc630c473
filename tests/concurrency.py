"""Running the same database work in several threads at once, released together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def race(work: Callable[[], T], *, threads: int, expected: tuple[type[Exception], ...] = ()) -> list[T | Exception]:
    """Run ``work`` in ``threads`` threads started together. Each result, or the ``expected``
    refusal raised; any other exception fails the caller (it is raised again)."""
    start = threading.Barrier(threads)
    results: list[T | Exception] = []
    unexpected: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append(work())
        except expected as exc:
            results.append(exc)
        except BaseException as exc:
            unexpected.append(exc)
        finally:
            connection.close()  # each thread has its own connection; leave none open

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if unexpected:
        raise unexpected[0]
    return results
