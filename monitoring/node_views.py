"""The node registry (issue 21) for operators (superusers): over the staff API, and as a page of the
admin that reloads itself. Service accounts' keys are refused, as the fleet is no wedding's business."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.node_reports import REPORT_TTL_INTERVALS, NodeReport, RegistryUnavailable, registry_client
from monitoring.selectors import nodes_reported
from monitoring.services.nodes import NodeNotReported, node_drain_set
from wedsync.api.serializers import ErrorResponse
from wedsync.services.audit import ClientInfo


class NodeSerializer(serializers.Serializer[None]):
    name = serializers.CharField(help_text="The node's REALTIME_NODE_NAME.")
    version = serializers.CharField(help_text="The release it runs (WEDSYNC_VERSION).")
    started_at = serializers.DateTimeField()
    reported_at = serializers.DateTimeField(help_text="A node unheard of for three report intervals is not listed.")
    sockets = serializers.IntegerField(help_text="Open sockets.")
    subscriptions_by_role = serializers.DictField(
        child=serializers.IntegerField(), help_text="Weddings followed, counted under the role held in each."
    )
    weddings = serializers.IntegerField(help_text="Weddings with at least one subscriber on the node.")
    cpu_percent = serializers.FloatField(help_text="Of one core, since the report before.")
    rss_bytes = serializers.IntegerField()
    loop_lag_ms = serializers.FloatField(help_text="The event loop's worst lateness since the report before.")
    delivery_p99_ms = serializers.FloatField(
        allow_null=True,
        help_text="99th percentile of event delivery latency (commit to frames written) over about the last "
        "minute; null when it delivered nothing meanwhile.",
    )
    presence_p99_ms = serializers.FloatField(
        allow_null=True,
        help_text="99th percentile of presence propagation (change to shown here) over about the last minute.",
    )
    error_closes_last_minute = serializers.IntegerField(help_text="Sockets it closed 1011 over about the last minute.")
    draining = serializers.BooleanField(help_text="An operator drains it: it closes its sockets and takes no new ones.")


class NodeList(serializers.Serializer[None]):
    nodes = NodeSerializer(many=True)


class NodeListView(APIView):
    @extend_schema(
        operation_id="nodes_list",
        responses={
            200: NodeList,
            403: OpenApiResponse(ErrorResponse, description="`forbidden`: not a superuser, or an API key."),
            503: OpenApiResponse(
                ErrorResponse, description="`unavailable`: Redis, where nodes report, did not answer."
            ),
        },
        summary="The server nodes that reported in the last three intervals, by name (superusers)",
    )
    def get(self, request: Request) -> Response:
        if getattr(request.auth, "service_account", None) is not None or not request.user.is_superuser:
            raise exceptions.PermissionDenied("The node list is for operators: superusers only.")
        try:
            reports = nodes_reported()
        except RegistryUnavailable as unavailable:
            return Response(
                {"error": {"code": "unavailable", "message": f"{unavailable} Try again shortly."}},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "5"},
            )
        return Response({"nodes": [_node_fields(report) for report in reports]})


def _node_fields(report: NodeReport) -> dict[str, Any]:
    """The report as NodeSerializer describes it: its times as datetimes, which the API writes in ISO 8601."""
    return {
        **msgspec.structs.asdict(report),
        "started_at": dt.datetime.fromtimestamp(report.started_at, tz=dt.UTC),
        "reported_at": dt.datetime.fromtimestamp(report.reported_at, tz=dt.UTC),
    }


@require_GET
def nodes_page(request: HttpRequest) -> HttpResponse:
    """The admin's page of the fleet (the admin site has checked the user is staff)."""
    if not request.user.is_superuser:
        raise PermissionDenied("The node list is for operators: superusers only.")
    every = settings.REALTIME_NODE_REPORT_SECONDS
    try:
        reports, unavailable = nodes_reported(), False
    except RegistryUnavailable:
        reports, unavailable = [], True
    nodes = [{**_node_fields(report), "rss_mb": round(report.rss_bytes / 1e6)} for report in reports]
    return render(
        request,
        "monitoring/nodes.html",
        {
            "title": "Server nodes",
            "nodes": nodes,
            "unavailable": unavailable,
            "refresh_seconds": max(1, round(every)),
            "expiry_seconds": round(every * REPORT_TTL_INTERVALS),
        },
    )


@require_POST
def node_drain_view(request: HttpRequest, node: str, *, drain: bool) -> HttpResponse:
    """The page's Drain and Resume buttons (the admin site has checked staff and the CSRF token)."""
    if not request.user.is_superuser:
        raise PermissionDenied("Draining nodes is for operators: superusers only.")
    try:
        node_drain_set(
            client=registry_client(),
            node=node,
            drain=drain,
            actor=request.user,
            client_info=ClientInfo.from_request(request),
        )
    except NodeNotReported:
        raise Http404("No node of that name has reported lately.") from None
    except RegistryUnavailable:
        messages.error(request, f"Nothing was changed: Redis, where nodes report, did not answer. {node} is as it was.")
        return redirect("admin-nodes")
    told = "closes its sockets a slice at a time" if drain else "takes sockets again"
    messages.success(request, f"{node} {told} from its next report.")
    return redirect("admin-nodes")
