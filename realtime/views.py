from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.services.tickets import TicketRefused, ticket_issue
from wedsync.access_revocation import SESSION_GENERATION_KEY
from wedsync.api.authentication import RevocableJWTAuthentication
from wedsync.api.errors import Unauthorized
from wedsync.api.serializers import TicketResponse
from wedsync.models import ApiScope, ServiceAccountKey
from wedsync.services.audit import ClientInfo
from wedsync.services.auth import access_token_claims


class TicketCreateView(APIView):
    """A single-use socket ticket, so browsers and integrations never put a token in a URL."""

    api_key_scopes = {"POST": ApiScope.READ}  # a service account's socket can only observe

    @extend_schema(request=None, responses={201: TicketResponse}, summary="Get a single-use socket ticket")
    def post(self, request: Request) -> Response:
        # The ticket keeps what the request's credential carries: its generation, and its end,
        # which the socket the ticket opens shares.
        if isinstance(request.successful_authenticator, RevocableJWTAuthentication):
            claims = access_token_claims(raw=str(request.auth))
            session_key, generation, expires_at = None, claims.generation, claims.expires_at
        elif isinstance(request.auth, ServiceAccountKey):  # an integrator's observer socket (decision 0030)
            session_key, generation, expires_at = None, None, request.auth.expiry_date
        else:
            session_key, expires_at = request.session.session_key, None
            stored = request.session.get(SESSION_GENERATION_KEY)
            generation = stored if isinstance(stored, int) else None
        try:
            ticket, ttl = ticket_issue(
                user=request.user,  # type: ignore[arg-type]
                client=ClientInfo.from_request(request),
                generation=generation,
                session_key=session_key,
                credential_expires_at=expires_at,
            )
        except TicketRefused as refused:
            raise Unauthorized(refused.message) from None
        return Response(
            {"ticket": ticket, "expires_in": ttl, "url": f"/ws/v1/?ticket={ticket}"}, status=status.HTTP_201_CREATED
        )
