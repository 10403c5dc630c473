from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.services.tickets import ticket_issue
from wedsync.api.serializers import TicketResponse
from wedsync.services.audit import ClientInfo


class TicketCreateView(APIView):
    """A single-use socket ticket, so browsers and integrations never put a token in a URL."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={201: TicketResponse}, summary="Get a single-use socket ticket")
    def post(self, request: Request) -> Response:
        ticket, ttl = ticket_issue(user=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]
        return Response(
            {"ticket": ticket, "expires_in": ttl, "url": f"/ws/v1/?ticket={ticket}"}, status=status.HTTP_201_CREATED
        )
