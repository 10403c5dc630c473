"""The admin's capacity page (superusers): the next 14 days' forecast from the wedding calendar,
as a chart of the nodes each day needs against the nodes serving now (reporting, not draining), and as a table."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from monitoring.capacity import DayForecast
from monitoring.node_reports import RegistryUnavailable, registry_client
from monitoring.selectors import forecast_from_today, nodes_reported

CHART_HEIGHT = 160  # px of the tallest bar
BAR_WIDTH, BAR_GAP = 36, 8


@dataclass(frozen=True, slots=True)
class Bar:
    """One day's bar of the chart, in the SVG's coordinates."""

    day: DayForecast
    x: int
    y: int
    height: int
    over: bool  # needs more nodes than serve now


@require_GET
def capacity_page(request: HttpRequest) -> HttpResponse:
    if not request.user.is_superuser:
        raise PermissionDenied("The capacity forecast is for operators: superusers only.")
    forecast = forecast_from_today()
    registered: int | None = None  # unknown: no registry (embedded mode), or Redis did not answer
    client = registry_client()
    if client is not None:
        with contextlib.suppress(RegistryUnavailable):
            registered = sum(1 for report in nodes_reported(client=client) if not report.draining)
    top = max([day.nodes for day in forecast] + [registered or 0, 1])
    scale = CHART_HEIGHT / top
    bars = [
        Bar(
            day=day,
            x=index * (BAR_WIDTH + BAR_GAP),
            y=CHART_HEIGHT - round(day.nodes * scale),
            height=round(day.nodes * scale),
            over=registered is not None and day.nodes > registered,
        )
        for index, day in enumerate(forecast)
    ]
    return render(
        request,
        "monitoring/capacity.html",
        {
            "title": "Capacity forecast",
            "bars": bars,
            "registered": registered,
            "registered_y": None if registered is None else CHART_HEIGHT - round(registered * scale),
            "chart_width": len(bars) * (BAR_WIDTH + BAR_GAP),
            "chart_height": CHART_HEIGHT,
            "bar_width": BAR_WIDTH,
            "sockets_per_node": settings.CAPACITY_SOCKETS_PER_NODE,
            "deliveries_per_node": settings.CAPACITY_DELIVERIES_PER_NODE,
            "spare": settings.CAPACITY_SPARE_NODES,
        },
    )
