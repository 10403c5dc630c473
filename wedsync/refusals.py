"""The one refusal type: a service said no, with the protocol's error code and a message for the
person refused. Sockets answer it as an error reply, the API as its error shape (docs/protocol.md).

It lives in the core so that every app can raise it without importing the socket wing.
"""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "bad_json",
    "invalid",
    "unknown_op",
    "unauthorized",
    "forbidden",
    "not_found",
    "not_subscribed",
    "rate_limited",
    "too_large",
    "conflict",
    "unavailable",
    "server_error",
]


class Refused(Exception):
    """A refusal: ``code`` is what the protocol or the API answers, ``message`` says why. Subclasses
    exist only where a caller must tell one refusal from another, or carry more."""

    def __init__(self, *, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
