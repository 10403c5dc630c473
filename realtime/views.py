from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.services.tickets import ticket_issue
from wedsync.api.authentication import RevocableJWTAuthentication
from wedsync.api.serializers import TicketResponse
from wedsync.services.audit import ClientInfo
from wedsync.services.auth import access_token_expiry


class TicketCreateView(APIView):
    """A single-use socket ticket, so browsers and integrations never put a token in a URL."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={201: TicketResponse}, summary="Get a single-use socket ticket")
    def post(self, request: Request) -> Response:
        # The socket the ticket opens ends with the credential that asked for it.
        if isinstance(request.successful_authenticator, RevocableJWTAuthentication):
            session_key, expires_at = None, access_token_expiry(raw=str(request.auth))
        else:
            session_key, expires_at = request.session.session_key, None
        ticket, ttl = ticket_issue(
            user=request.user,  # type: ignore[arg-type]
            client=ClientInfo.from_request(request),
            session_key=session_key,
            credential_expires_at=expires_at,
        )
        return Response(
            {"ticket": ticket, "expires_in": ttl, "url": f"/ws/v1/?ticket={ticket}"}, status=status.HTTP_201_CREATED
        )
