"""What other apps decide inside a publish's transaction, registered by their ``AppConfig.ready()``.

The event log runs these hooks without importing the apps that fill them (presence registers the
emergency alarm's gate and emergency mode's reach), so it knows nothing about what they decide.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Protocol

from realtime.names import EventType
from wedsync.refusals import ErrorCode, Refused

if TYPE_CHECKING:
    from wedsync.models import Member
    from wedsync.services.audit import ClientInfo


class PublishRefused(Refused):
    """A refused ``publish``; ``retry_after`` (seconds) when it was refused for its rate."""

    def __init__(self, *, code: ErrorCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(code=code, message=message)
        self.retry_after = retry_after


class Admission(Protocol):
    """A publish a gate let through: the event's ``data`` as stored, and what to record with it."""

    def event_data(self, data: dict[str, Any]) -> dict[str, Any]: ...

    def record(self, *, event_id: uuid.UUID, sender: Member) -> None:
        """After the event is stored, in its transaction."""


class PublishGate(Protocol):
    """Admits a member's events of one type under the wedding's stream lock, in the event's own
    transaction (so what it decides and the event are kept or dropped together)."""

    def admit(self, *, member: Member) -> Admission:
        """What the event will be, or :class:`PublishRefused`."""

    def refusal_audit(self, *, member: Member, refused: PublishRefused, client: ClientInfo | None) -> None:
        """Called once the refused transaction is gone."""


class ReachWidening(Protocol):
    """A wedding's reasons (ids) to let a vendor's ``to`` reach anyone; read under the stream lock."""

    def __call__(self, *, wedding_id: int) -> list[int]: ...


# Filled once at start-up by the apps' ready(), read only afterwards.
_GATES: dict[EventType, PublishGate] = {}
_REACH_WIDENINGS: list[ReachWidening] = []


def publish_gate_register(*, event_type: EventType, gate: PublishGate) -> None:
    if event_type in _GATES and _GATES[event_type] is not gate:
        raise RuntimeError(f"{event_type} has a publish gate already")
    _GATES[event_type] = gate


def publish_gate(*, event_type: EventType) -> PublishGate | None:
    return _GATES.get(event_type)


def reach_widening_register(*, widening: ReachWidening) -> None:
    if widening not in _REACH_WIDENINGS:
        _REACH_WIDENINGS.append(widening)


def reach_widening_reasons(*, wedding_id: int) -> list[int]:
    """Why, if at all, a vendor may reach anyone in the wedding now (empty: they may not)."""
    return [reason for widening in _REACH_WIDENINGS for reason in widening(wedding_id=wedding_id)]
