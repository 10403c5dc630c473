"""Access changes in the core reach live sockets on every node, after the change commits."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import receiver

from realtime.messages import ControlMessage
from realtime.node.hub import node_control_send
from wedsync.signals import member_access_changed, member_details_changed, tokens_revoked


@receiver(tokens_revoked)
def _tokens_revoked(sender: Any, *, user_id: int, generation: int, **kwargs: Any) -> None:
    transaction.on_commit(node_control_send(ControlMessage(kind="tokens_revoked", user=user_id, generation=generation)))


@receiver(member_access_changed)
def _member_access_changed(
    sender: Any, *, user_id: int, wedding_id: int, member_id: int, reason: str, **kwargs: Any
) -> None:
    transaction.on_commit(
        node_control_send(
            ControlMessage(kind="member_changed", user=user_id, wedding=wedding_id, member=member_id, reason=reason)
        )
    )


@receiver(member_details_changed)
def _member_details_changed(sender: Any, *, user_id: int, wedding_id: int, member_id: int, **kwargs: Any) -> None:
    transaction.on_commit(
        node_control_send(ControlMessage(kind="member_updated", user=user_id, wedding=wedding_id, member=member_id))
    )
