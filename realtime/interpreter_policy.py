"""How long one thread of a socket node may hold the GIL while another waits for it (decision 0033).

A node runs its event loop (every socket's frames) and, beside it, threads for Django's sync code:
each HTTP request and each ORM call. Such a thread gives the GIL up at every database round trip
and thread hop, and to get it back waits for the loop to yield it, which a busy loop does only
every switch interval. Shorter intervals let a request's many short steps through sooner.
"""

from __future__ import annotations

import sys


def gil_switch_interval_set(*, milliseconds: float) -> float:
    """Set the interpreter's switch interval; returns the one before, in milliseconds."""
    before = sys.getswitchinterval() * 1000
    sys.setswitchinterval(milliseconds / 1000)
    return before
