from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.names import EventType
from realtime.selectors import SubscriptionDenied, events_history
from realtime.services.publish_hooks import PublishRefused
from realtime.services.sockets import api_event_publish, history_viewer_check
from realtime.services.tickets import TicketRefused, ticket_issue
from wedsync.access_revocation import SESSION_GENERATION_KEY
from wedsync.api.authentication import RevocableJWTAuthentication
from wedsync.api.conventions import ID_MAX, IDEMPOTENCY_KEY_HEADER, created_once, idempotency_key, unstorable_response
from wedsync.api.errors import Unauthorized
from wedsync.api.parsers import JSONParser
from wedsync.api.serializers import ErrorResponse, StorableText, StrictQuery, TicketResponse, unstorable
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
    next_after = serializers.IntegerField(
        allow_null=True,
        help_text="Ask after= this for the next page; null at the log's end. A page may hold fewer events than "
        "limit, even none, and still have one: each page reads a bounded part of the log.",
    )


class WeddingEventPublishRequest(serializers.Serializer[None]):
    type = serializers.ChoiceField(choices=[t.value for t in EventType])
    data = serializers.DictField(help_text="The type's fields (docs/protocol.md).")  # type: ignore[assignment]  # a field named like Serializer.data
    to = serializers.ListField(
        child=StorableText(min_length=1, max_length=64),
        required=False,
        max_length=100,
        help_text="role:<r> / member:<id>",
    )
    priority = serializers.ChoiceField(choices=["low", "normal", "high", "critical", "emergency"], required=False)


class PublishedResponse(serializers.Serializer[None]):
    seq = serializers.IntegerField()
    id = serializers.UUIDField()


_PUBLISH_STATUS = {"invalid": 422, "forbidden": 403, "rate_limited": 429, "not_found": 404}


class WeddingEventListView(APIView):
    """The wedding's event log, as the caller may see it (the socket's audience rules), and
    publishing into it over HTTP: as the member one is, or as staff (an announcement)."""

    api_key_scopes = {"POST": ApiScope.PUBLISH}
    parser_classes = [JSONParser]  # an event's data is an object: JSON only, as on the socket

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
        asked = min(wedding_id, ID_MAX)
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

    @extend_schema(
        request=WeddingEventPublishRequest,
        parameters=[IDEMPOTENCY_KEY_HEADER],
        responses={
            201: PublishedResponse,
            403: ErrorResponse,
            422: OpenApiResponse(ErrorResponse, description="`invalid`: the data, `to` or priority, or a reused key."),
            428: OpenApiResponse(ErrorResponse, description="`precondition_required`: no Idempotency-Key."),
        },
        summary="Publish an event: a member as themselves; overseeing staff and keys an announcement",
    )
    def post(self, request: Request, wedding_id: int) -> Response:
        key = idempotency_key(request)
        body = WeddingEventPublishRequest(data=request.data)
        body.is_valid(raise_exception=True)
        fields = body.validated_data
        asked = min(wedding_id, ID_MAX)
        client = ClientInfo.from_request(request)

        if unstorable(fields["data"]) or unstorable(fields.get("to", [])):  # the socket refuses them too
            return unstorable_response()

        def create() -> tuple[int, dict[str, Any]]:
            try:
                published = api_event_publish(
                    user=request.user,
                    account=getattr(request.auth, "service_account", None),
                    wedding_id=asked,
                    type_name=fields["type"],
                    data=fields["data"],
                    to=fields.get("to"),
                    priority_name=fields.get("priority"),
                    idempotency_key=key,
                    client=client,
                )
            except PublishRefused as refused:  # answered, and audited where it concerns access
                error: dict[str, Any] = {"code": refused.code, "message": refused.message}
                if refused.retry_after is not None:
                    error["retry_after"] = refused.retry_after
                return _PUBLISH_STATUS.get(refused.code, 403), {"error": error}
            return status.HTTP_201_CREATED, {"seq": published.seq, "id": str(published.id)}

        response = created_once(request, key=key, create=create)
        retry_after = response.data.get("error", {}).get("retry_after") if response.status_code == 429 else None
        if retry_after is not None:  # as DRF's own throttles say it, in the header too
            response["Retry-After"] = str(math.ceil(retry_after))
        return response
