"""A socket node caps its malloc arenas (realtime.daphne.memory, decision 0016)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from realtime.daphne.memory import malloc_arenas_cap

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt and malloc_info")

# Eight threads allocate above pymalloc's 512 bytes (so from malloc) at the same time, then the
# process asks glibc how many arenas ("heaps") it has.
ARENAS_IN_USE = """
import ctypes, sys, threading
from realtime.daphne.memory import malloc_arenas_cap
if sys.argv[1] == "capped":
    assert malloc_arenas_cap(arenas=2)
ready = threading.Barrier(9)
done = threading.Event()
def allocate():
    held = [bytearray(4096) for _ in range(500)]
    ready.wait()
    done.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
ready.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
out = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, out)
libc.fclose(out)
done.set()
for t in threads:
    t.join()
"""


def _arenas(mode: str, tmp_path: Path) -> int:
    report = tmp_path / f"malloc-{mode}.xml"
    # An arena limit set from outside would make the uncapped run capped too.
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    subprocess.run(
        [sys.executable, "-c", ARENAS_IN_USE, mode, str(report)],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        env=env,
    )
    return report.read_text().count("<heap nr=")


def test_threads_allocating_at_once_share_the_capped_arenas(tmp_path: Path) -> None:
    uncapped = _arenas("default", tmp_path)
    capped = _arenas("capped", tmp_path)

    assert uncapped > 2, "glibc's default should give the eight threads arenas of their own"
    assert capped <= 2


def test_zero_leaves_the_default() -> None:
    assert malloc_arenas_cap(arenas=0) is False
