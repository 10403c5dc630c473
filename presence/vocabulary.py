"""Presence words of PROTOCOL.md section 6 (zones live with the timeline in wedsync.models.records)."""

from __future__ import annotations

import enum


class PresenceStatus(enum.StrEnum):
    ONLINE = "online"
    AWAY = "away"
    BUSY = "busy"
    OFFLINE = "offline"


class VendorActivity(enum.StrEnum):
    EN_ROUTE = "en_route"
    AT_VENUE = "at_venue"
    SETUP = "setup"
    WORKING = "working"
    CEREMONY = "ceremony"
    RECEPTION = "reception"
    BREAKDOWN = "breakdown"
    DONE = "done"
