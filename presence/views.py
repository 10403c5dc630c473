"""Staff API for wedding-day alerts, emergencies and presence. Thin: validate input, call one selector or
service, shape the reply."""

from __future__ import annotations

import redis
import structlog
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from presence.access import wedding_view_check
from presence.alerts.selectors import AlertState, wedding_alerts
from presence.alerts.services import alert_access_check, alert_acknowledge
from presence.emergency.selectors import EmergencyState, wedding_emergencies
from presence.emergency.services import EmergencyRefused, emergency_resolve
from presence.selectors import presence_snapshot
from presence.serializers import (
    AlertListQuery,
    AlertListResponse,
    AlertSerializer,
    EmergencyListQuery,
    EmergencyListResponse,
    EmergencySerializer,
    PresenceSnapshotResponse,
)
from wedsync.api.conventions import ID_MAX
from wedsync.api.serializers import ErrorResponse
from wedsync.refusals import Refused
from wedsync.services.audit import AuditAction, ClientInfo

logger = structlog.get_logger(__name__)

# Path ids beyond a bigint name nothing; asking the database would be an error, not an answer.


def _ids_exist(*ids: int) -> None:
    if any(value > ID_MAX for value in ids):
        raise NotFound("No such wedding, alert or emergency.")


def _refused(refused: Refused) -> Response:
    """The API's error shape for a refusal the service already audited (the exception handler
    would audit it a second time)."""
    code = status.HTTP_404_NOT_FOUND if refused.code == "not_found" else status.HTTP_403_FORBIDDEN
    return Response({"error": {"code": refused.code, "message": refused.message}}, status=code)


class WeddingAlertListView(APIView):
    @extend_schema(
        parameters=[AlertListQuery],
        responses={200: AlertListResponse, 403: ErrorResponse},
        summary="A wedding's alerts (open ones unless state says otherwise), newest first",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        _ids_exist(wedding_id)
        query = AlertListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            alert_access_check(
                user=request.user,
                wedding_id=wedding_id,
                op="list",
                target=f"wedding:{wedding_id}",
                client=ClientInfo.from_request(request),
            )
        except Refused as refused:
            return _refused(refused)
        limit = query.validated_data["limit"]
        alerts = list(
            wedding_alerts(wedding_id=wedding_id, state=AlertState(query.validated_data["state"]))[: limit + 1]
        )
        return Response({"alerts": AlertSerializer(alerts[:limit], many=True).data, "more": len(alerts) > limit})


class AlertAckView(APIView):
    @extend_schema(
        request=None,
        responses={200: AlertSerializer, 403: ErrorResponse, 404: ErrorResponse},
        summary="Acknowledge an alert (idempotent: the first acknowledgement stays)",
    )
    def post(self, request: Request, wedding_id: int, alert_id: int) -> Response:
        _ids_exist(wedding_id, alert_id)
        try:
            alert = alert_acknowledge(
                wedding_id=wedding_id, alert_id=alert_id, user=request.user, client=ClientInfo.from_request(request)
            )
        except Refused as refused:
            return _refused(refused)
        return Response(AlertSerializer(alert).data)


class WeddingEmergencyListView(APIView):
    @extend_schema(
        parameters=[EmergencyListQuery],
        responses={200: EmergencyListResponse, 403: ErrorResponse, 404: ErrorResponse},
        summary="A wedding's emergencies (open ones unless state says otherwise), newest first",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        _ids_exist(wedding_id)
        query = EmergencyListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            wedding_view_check(
                user=request.user,
                wedding_id=wedding_id,
                action=AuditAction.EMERGENCY_REFUSE,
                op="list",
                target=f"wedding:{wedding_id}",
                client=ClientInfo.from_request(request),
            )
        except Refused as refused:
            return _refused(refused)
        limit = query.validated_data["limit"]
        state = EmergencyState(query.validated_data["state"])
        emergencies = list(wedding_emergencies(wedding_id=wedding_id, state=state)[: limit + 1])
        return Response(
            {"emergencies": EmergencySerializer(emergencies[:limit], many=True).data, "more": len(emergencies) > limit}
        )


class EmergencyResolveView(APIView):
    @extend_schema(
        request=None,
        responses={200: EmergencySerializer, 403: ErrorResponse, 404: ErrorResponse},
        summary="Resolve an emergency (idempotent: the first resolution stays); tells everyone emergency.resolved",
    )
    def post(self, request: Request, wedding_id: int, emergency_id: int) -> Response:
        _ids_exist(wedding_id, emergency_id)
        try:
            emergency = emergency_resolve(
                wedding_id=wedding_id,
                emergency_id=emergency_id,
                user=request.user,
                client=ClientInfo.from_request(request),
            )
        except EmergencyRefused as refused:
            return _refused(refused)
        return Response(EmergencySerializer(emergency).data)


class WeddingPresenceView(APIView):
    @extend_schema(
        responses={200: PresenceSnapshotResponse, 403: ErrorResponse, 404: ErrorResponse, 503: ErrorResponse},
        summary="Who is here now: the subscribe reply's presence snapshot for the caller's role (staff: a planner's)",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        _ids_exist(wedding_id)
        try:
            viewer_role = wedding_view_check(
                user=request.user,
                wedding_id=wedding_id,
                action=AuditAction.PRESENCE_SNAPSHOT_REFUSE,
                op="presence",
                target=f"wedding:{wedding_id}",
                client=ClientInfo.from_request(request),
            )
        except Refused as refused:
            return _refused(refused)
        try:
            snapshot = presence_snapshot(wedding_id=wedding_id, viewer_role=viewer_role)
        except redis.RedisError:
            logger.warning("api.presence_unavailable", wedding=wedding_id, exc_info=True)
            return Response(
                {"error": {"code": "unavailable", "message": "Presence is unavailable right now: try again shortly."}},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "5"},
            )
        return Response(snapshot.wire)
