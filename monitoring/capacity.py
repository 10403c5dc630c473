"""The capacity forecast (issue 21, decision 0038): from the wedding calendar, the concurrent
sockets, events and deliveries of each of the next days, and the nodes they need.

A wedding loads the service during its peak window, ``CAPACITY_PEAK_BEFORE_HOURS`` before its
ceremony to ``CAPACITY_PEAK_AFTER_HOURS`` after (guests arriving, the ceremony, the reception),
with every member of its wedding party online and a share of its guests, each on
``CAPACITY_SOCKETS_PER_MEMBER`` sockets, publishing ``CAPACITY_EVENTS_PER_WEDDING_PER_SECOND``
events to all of them. A day's forecast is its busiest UTC hour: the weddings whose windows
overlap that hour, added up. Its nodes: what holds the sockets and carries the deliveries at the
per-node capacities, plus ``CAPACITY_SPARE_NODES`` (one can fail or drain at the peak).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings

from wedsync.permissions import Role

HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class WeddingLoad:
    """One wedding's load on the service during its peak window."""

    wedding_id: int
    starts: datetime
    ends: datetime
    sockets: float
    events_per_second: float


@dataclass(frozen=True, slots=True)
class DayForecast:
    day: date  # a UTC calendar day
    offset: int  # days from today: 0 is today
    peak_at: datetime | None  # the start of its busiest hour (UTC); None when no wedding loads it
    weddings: int  # weddings in that hour
    sockets: int
    events_per_second: float
    deliveries_per_second: int
    nodes: int  # recommended, spare included

    @property
    def is_saturday(self) -> bool:
        return self.day.weekday() == 5


def wedding_load(*, wedding_id: int, ceremony_at: datetime, members_by_role: Mapping[str, int]) -> WeddingLoad:
    """What one wedding with these active members asks of the service, and when."""
    guests = members_by_role.get(Role.GUEST.value, 0)
    party = sum(count for role, count in members_by_role.items() if role != Role.GUEST.value)
    online = party + guests * settings.CAPACITY_GUEST_ONLINE_SHARE
    return WeddingLoad(
        wedding_id=wedding_id,
        starts=ceremony_at - timedelta(hours=settings.CAPACITY_PEAK_BEFORE_HOURS),
        ends=ceremony_at + timedelta(hours=settings.CAPACITY_PEAK_AFTER_HOURS),
        sockets=online * settings.CAPACITY_SOCKETS_PER_MEMBER,
        events_per_second=settings.CAPACITY_EVENTS_PER_WEDDING_PER_SECOND,
    )


def nodes_for(*, sockets: float, deliveries_per_second: float) -> int:
    """Nodes that hold ``sockets`` and carry ``deliveries_per_second`` at the per-node capacities,
    spare included; at least one node and its spare."""
    needed = max(
        1,
        math.ceil(sockets / settings.CAPACITY_SOCKETS_PER_NODE),
        math.ceil(deliveries_per_second / settings.CAPACITY_DELIVERIES_PER_NODE),
    )
    return needed + settings.CAPACITY_SPARE_NODES


def capacity_forecast(*, loads: list[WeddingLoad], today: date, days: int) -> list[DayForecast]:
    """Each day's busiest hour from ``today`` on: the sum of the loads whose window overlaps it."""
    forecasts = []
    for offset in range(days):
        day = today + timedelta(days=offset)
        midnight = datetime.combine(day, time(0), tzinfo=UTC)
        busiest: tuple[float, datetime | None, list[WeddingLoad]] = (0.0, None, [])
        for hour in range(24):
            start = midnight + hour * HOUR
            active = [load for load in loads if load.starts < start + HOUR and load.ends > start]
            deliveries = sum(load.events_per_second * load.sockets for load in active)
            if active and (busiest[1] is None or deliveries > busiest[0]):
                busiest = (deliveries, start, active)
        deliveries, peak_at, active = busiest
        sockets = sum(load.sockets for load in active)
        forecasts.append(
            DayForecast(
                day=day,
                offset=offset,
                peak_at=peak_at,
                weddings=len(active),
                sockets=round(sockets),
                events_per_second=round(sum(load.events_per_second for load in active), 2),
                deliveries_per_second=round(deliveries),
                nodes=nodes_for(sockets=sockets, deliveries_per_second=deliveries),
            )
        )
    return forecasts
