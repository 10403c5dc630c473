"""Every message that crosses the channel layer between nodes, as typed structs.

This module is the only builder and parser of channel-layer messages: senders build a struct and
hand it to :func:`layer_encode` (``realtime.layer_send`` does), a node's receive loop turns what it
reads into a struct with :func:`layer_decode`. The structs are frozen: a received message is read,
never changed, and what a node derives from one (its encoded frame) lives in a struct of its own.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from realtime.names import LAYER_CONTROL, LAYER_EVENT, LAYER_PRESENCE

PresenceKind = Literal["joins", "leaves", "updates"]
ControlKind = Literal["close_connection", "tokens_revoked", "member_changed", "member_updated", "access_ended"]


class EventMessage(msgspec.Struct, frozen=True, tag_field="type", tag=LAYER_EVENT):
    """A stored event, sent once per node to its wedding's group (or read back from the log)."""

    wedding: int
    seq: int
    priority: int
    roles: list[str]  # the audience: these roles, and these members
    members: list[int]
    frame: dict[str, Any]  # the ``event`` frame as clients get it (PROTOCOL.md section 3)
    # When its transaction committed (epoch seconds), for the delivery latency; 0 when read back from the log.
    committed_at: float = 0.0


class PresenceEntry(msgspec.Struct, frozen=True):
    """One member's presence change in one wedding; ``v`` (its version) only grows."""

    wedding: int
    member: int
    kind: PresenceKind
    role: str
    state: dict[str, Any]  # the member's state on the wire (PROTOCOL.md section 4)
    v: int


class PresenceBatch(msgspec.Struct, frozen=True, tag_field="type", tag=LAYER_PRESENCE):
    """A node's presence changes of one window, to every node."""

    entries: list[PresenceEntry]


class ControlMessage(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag=LAYER_CONTROL):
    """Something a user's sockets must do, told to every node (or found by a node's own checks).

    ``close_connection``: ``connection`` goes (a device limit); ``tokens_revoked``: sockets
    authenticated before ``generation`` go; ``member_changed``: the subscription to ``wedding`` ends
    (``reason``); ``member_updated``: the member's details changed, their access did not (nodes
    forget what they cached, sockets stay); ``access_ended``: the socket goes (``reason``:
    deactivated, session_ended).
    """

    kind: ControlKind
    user: int = 0  # 0 for a check of one socket, which is not routed by user
    connection: str = ""
    generation: int = 0
    wedding: int = 0
    member: int = 0
    reason: str = ""


LayerMessage = EventMessage | PresenceBatch | ControlMessage


def layer_encode(message: LayerMessage) -> dict[str, Any]:
    """The dict the channel layer serializes (its ``type`` is the struct's tag)."""
    encoded: dict[str, Any] = msgspec.to_builtins(message)
    return encoded


def layer_decode(raw: dict[str, Any]) -> LayerMessage:
    """The struct of a message read from the layer; raises ``msgspec.ValidationError`` for one that
    is not a message of ours (the layer's own keys, such as its channel name, are ignored)."""
    decoded: LayerMessage = msgspec.convert(raw, type=LayerMessage)
    return decoded
