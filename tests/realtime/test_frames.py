"""Frames written directly to daphne's sockets are byte for byte what a WebSocket library writes."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Frame, Opcode

from realtime.framing import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_frames_match_the_reference_serialisation(size: int) -> None:
    data = ("é" * size).encode()[:size]
    expected = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])

    assert text_frame(data) == expected


def test_an_unclosed_quote_does_not_make_the_nesting_scan_quadratic() -> None:
    """'"' followed by 32,000 escaped quotes and some brackets: the scan's string pattern once
    backtracked from every quote to the end of the frame (14 s of a node's loop per frame). Run in
    a process of its own with a bound on a hang (the regex holds the GIL, so no thread could time
    it out); the fix takes milliseconds."""
    import subprocess
    import sys

    script = (
        "import django; django.setup()\n"
        "from realtime.protocol import FrameError, frame_decode\n"
        "try:\n"
        "    frame_decode('\"' + '\\\\\"' * 32_000 + '[' * 33)\n"
        "except FrameError as error:\n"
        "    print(error.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "wedsync.settings_test"},
        check=True,
    )
    assert done.stdout.strip() in ("bad_json", "invalid"), done.stderr[-2000:]
