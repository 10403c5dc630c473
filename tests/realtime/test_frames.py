"""Frames written directly to daphne's sockets are byte for byte what a WebSocket library writes."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from realtime.daphne_support import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_frames_match_the_reference_serialisation(size: int) -> None:
    data = ("é" * size).encode()[:size]
    expected = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])

    assert text_frame(data) == expected
