"""A node's own events, handed to its feeds without the round trip through Redis (decision 0050).

Two rules keep what a socket sees as it was when every event came back through Redis:

- an event is taken locally only when it is the next its feed expects (``WeddingFeed.offer_next``):
  one that would skip ahead, past another node's commit still crossing Redis, is left to Redis,
  which brings both in order, instead of costing a read of the log;
- while a control message this process sent that ends someone's access (a revocation, a member
  removed or changed) has not come back from Redis, events wait for Redis too, so none overtakes a
  control committed before it. Controls from other processes never had an order with this node's
  events; the access check (every 5 s) ends what they missed, as before.
"""

from __future__ import annotations

from realtime.messages import ControlMessage

# A control not heard back by then was dropped on its way (realtime.layer_send gives up at 5 s).
CONTROL_WAIT_SECONDS = 10.0
# The controls an event must not overtake: they end a socket's access to what the event shows.
# A device's close and a member's new details do not, and holding events for them would only slow
# every wedding's local events (a reconnect storm closes devices by the hundred).
ACCESS_ENDING = frozenset({"tokens_revoked", "access_ended", "member_changed"})


class LocalHandOver:
    """The controls one node sent and has not heard back yet. Used on the node's loop only."""

    def __init__(self) -> None:
        self._controls: list[tuple[ControlMessage, float]] = []  # (sent, when), oldest first

    def control_sent(self, message: ControlMessage, *, now: float) -> None:
        if message.kind in ACCESS_ENDING:
            self._controls.append((message, now))

    def control_heard(self, message: ControlMessage) -> None:
        for index, (sent, _) in enumerate(self._controls):
            if sent == message:
                del self._controls[index]
                return

    def events_may_pass(self, *, now: float) -> bool:
        """Whether an event may go to the feeds now: no control of ours is still on its way."""
        while self._controls and now - self._controls[0][1] > CONTROL_WAIT_SECONDS:
            del self._controls[0]
        return not self._controls
