"""Cap how many malloc arenas a socket node's C library keeps (decision 0016).

glibc gives each new thread that allocates an arena of its own, up to eight per core, and only
shares arenas past that limit. A node runs its sockets' database and presence calls on a pool of
threads (``REALTIME_THREAD_POOL``), which allocate query rows, decoded JSON and frames above
pymalloc's 512 bytes. What one arena frees is not reused by the others, so the process keeps
each arena's high-water mark. Python's own small objects do not use these arenas (pymalloc maps
its own). The GIL serialises most of the threads' allocations; C code that runs without it
(libpq, for one) may wait for a shared arena's lock, which is the cap's cost (decision 0016).
"""

from __future__ import annotations

import ctypes
import sys

# <malloc.h>: mallopt's parameter for the arena limit.
M_ARENA_MAX = -8


def malloc_arenas_cap(*, arenas: int) -> bool:
    """Limit the process to ``arenas`` malloc arenas (0 leaves the C library's default).

    True when the C library took the limit; False on one without glibc's ``mallopt`` (musl,
    macOS), where the call does nothing. Arenas that exist already stay; call it before the
    threads start.
    """
    if arenas <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
