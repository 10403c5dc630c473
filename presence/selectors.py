"""Reads of presence and of the wedding-day safety state."""

from __future__ import annotations

from presence.models import Emergency


def wedding_emergency_open(*, wedding_id: int) -> bool:
    """Whether an emergency is open in the wedding (emergency mode, PROTOCOL.md section 6 / issue 5)."""
    return Emergency.objects.filter(wedding_id=wedding_id, resolved_at__isnull=True).exists()
