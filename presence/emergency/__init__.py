"""Emergency mode (issue 5, part 7): an ``emergency.alert`` opens an :class:`~presence.models.Emergency`
(in the transaction that stores the event, see ``services.emergency_open``), a planner or staff
resolves it; while one is open, vendors may publish to everyone, anyone may share a location and
alerts are re-notified every 5 minutes (docs/decisions/0011)."""
