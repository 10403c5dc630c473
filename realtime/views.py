from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.names import EventType
from realtime.selectors import SubscriptionDenied, events_history
from realtime.services.sockets import history_viewer_check
from realtime.services.tickets import TicketRefused, ticket_issue
from wedsync.access_revocation import SESSION_GENERATION_KEY
from wedsync.api.authentication import RevocableJWTAuthentication
from wedsync.api.errors import Unauthorized
from wedsync.api.serializers import ErrorResponse, StrictQuery, TicketResponse
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


class WeddingEventQuery(StrictQuery):
    after = serializers.IntegerField(required=False, default=0, min_value=0, help_text="Events after this seq.")
    before = serializers.IntegerField(required=False, min_value=1, help_text="Events before this seq.")
    since = serializers.DateTimeField(required=False, help_text="Events stored at or after this time.")
    until = serializers.DateTimeField(required=False, help_text="Events stored before this time.")
    type = serializers.MultipleChoiceField(choices=[t.value for t in EventType], required=False)
    limit = serializers.IntegerField(required=False, default=100, min_value=1, max_value=500)


class WeddingEventPage(serializers.Serializer[None]):
    events = serializers.ListField(child=serializers.DictField(), help_text="Event frames (docs/protocol.md).")
    next_after = serializers.IntegerField(allow_null=True, help_text="Ask after= this for the next page.")


class WeddingEventListView(APIView):
    """The wedding's event log, as the caller may see it (the socket's audience rules)."""

    @extend_schema(
        operation_id="wedding_events_list",
        parameters=[WeddingEventQuery],
        responses={200: WeddingEventPage, 403: ErrorResponse},
        summary="A wedding's events by seq or time, oldest first, in pages (members: their own view)",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        query = WeddingEventQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        # An id past a bigint names nothing: asked as the largest one, it is refused like any stranger's.
        asked = min(wedding_id, 2**63 - 1)
        try:
            viewer = history_viewer_check(
                user_id=request.user.pk or 0, wedding_id=asked, client=ClientInfo.from_request(request)
            )
        except SubscriptionDenied as denied:
            return Response(
                {"error": {"code": denied.code, "message": denied.message}}, status=status.HTTP_403_FORBIDDEN
            )
        page = events_history(
            wedding_id=asked,
            member_id=viewer.member_id,
            role=viewer.role,
            after=params["after"],
            before=params.get("before"),
            since=params.get("since"),
            until=params.get("until"),
            types=frozenset(params.get("type", ())),
            limit=params["limit"],
        )
        return Response({"events": page.events, "next_after": page.next_after})
