"""RFC 6455 frames the server builds itself, for the messages of protocol v1 (``realtime.protocol``)."""

from __future__ import annotations

import struct


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked server text frame (RFC 6455 section 5.2) around ``payload``.

    Built once per event per node and written as-is to every local socket: server frames are
    never masked and daphne negotiates no extension, so every socket's bytes are the same.
    """
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload
