"""What the node needs of a connected socket (the consumer implements it)."""

from __future__ import annotations

from typing import Protocol

from realtime.messages import ControlMessage
from realtime.names import Priority


class Socket(Protocol):
    connection_id: str
    user_id: int
    heartbeat_interval: int
    client_device: str  # the client's stable name for the device, if it gave one
    role: str  # what its memberships make it (realtime.node.registry.socket_role), for the node's metrics

    @property
    def token_generation(self) -> int:
        """The token generation the socket was authenticated with; a newer one revokes it."""
        ...

    @property
    def session_key(self) -> str | None:
        """The browser session the socket lives on, if it does: it ends with the session."""
        ...

    @property
    def reconnects(self) -> int:
        """This device's connects in the last hour, before this one (told in presence)."""
        ...

    def heard_at(self) -> float:
        """When the client last sent anything (epoch seconds): a frame, a ping or a pong."""
        ...

    def push_event(
        self,
        text: str,
        *,
        priority: Priority,
        topic: str | None,
        seq: int | None,
        conflate_key: str | None,
        framed: bytes | None = None,
    ) -> None: ...

    def on_control(self, message: ControlMessage) -> None: ...

    def too_slow(self) -> None: ...

    def going_away(self) -> None:
        """Close with 1001: the node is draining; the client reconnects to another and resumes."""
        ...
