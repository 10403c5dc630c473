"""Event webhook subscriptions over the staff API (issue 20, decision 0032): a service account's key
lists, creates (``Idempotency-Key``; the signing secret shown once), reads, deletes, rotates the
secret of and resumes its subscriptions to a wedding it oversees. People follow a wedding over its
socket: they are refused. Thin: validate, check, call one selector or service, shape the reply."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.models import EventWebhook
from monitoring.selectors import event_webhook_of, event_webhooks_of
from monitoring.services.event_webhooks.subscriptions import (
    event_webhook_account_check,
    event_webhook_create,
    event_webhook_delete,
    event_webhook_resume,
    event_webhook_secret_rotate,
)
from realtime.names import EventType
from wedsync.api.conventions import (
    ID_MAX,
    IDEMPOTENCY_KEY_HEADER,
    created_once,
    idempotency_key,
    refused_response,
    unstorable_response,
)
from wedsync.api.parsers import JSONParser
from wedsync.api.serializers import ErrorResponse, StorableText, unstorable
from wedsync.models import ApiScope, ServiceAccount
from wedsync.refusals import Refused
from wedsync.services.audit import ClientInfo

# Every event type, as the events API's filter and publish body list them (one enum in the schema).
EVENT_TYPES = [t.value for t in EventType]


class EventWebhookSerializer(serializers.Serializer[EventWebhook]):
    id = serializers.IntegerField()
    wedding = serializers.IntegerField(source="wedding_id")
    url = serializers.CharField()
    event_types = serializers.ListField(child=serializers.CharField(), help_text="Types sent; empty: every type.")
    is_active = serializers.BooleanField(help_text="False: paused (see pause_reason); nothing is sent.")
    paused_at = serializers.DateTimeField(allow_null=True)
    pause_reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_delivered_seq = serializers.IntegerField(help_text="Every event up to this seq was delivered.")
    last_delivered_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField(source="run_attempts", help_text="Attempts at the batch now waiting.")
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    secret = serializers.SerializerMethodField(
        help_text="The signing secret: only in the answer to a create (not its replay) and to rotate-secret."
    )

    def get_secret(self, webhook: EventWebhook) -> str | None:
        shown: str | None = self.context.get("secret")
        return shown


class EventWebhookCreateRequest(serializers.Serializer[None]):
    url = StorableText(
        min_length=1, max_length=2000, help_text="https:// (http:// only to a loopback host); 422 otherwise."
    )
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES),
        required=False,
        default=list,
        max_length=len(EventType),
        help_text="The event types to send; empty or left out: every type.",
    )


_ERRORS: dict[int, Any] = {
    403: OpenApiResponse(
        ErrorResponse, description="`forbidden`: not an API key, or a wedding its account does not oversee."
    ),
    404: OpenApiResponse(ErrorResponse, description="`not_found`: no such subscription of this key's account."),
}


def _shown(webhook: EventWebhook, *, secret: str | None = None) -> dict[str, Any]:
    return dict(EventWebhookSerializer(webhook, context={"secret": secret}).data)


def _account(request: Request, wedding_id: int, *, op: str) -> ServiceAccount:
    if wedding_id > ID_MAX:
        raise Refused(code="not_found", message="No such wedding.")
    return event_webhook_account_check(
        user=request.user,
        account=getattr(request.auth, "service_account", None),
        wedding_id=wedding_id,
        op=op,
        client=ClientInfo.from_request(request),
    )


def _webhook(request: Request, wedding_id: int, webhook_id: int, *, op: str) -> EventWebhook:
    account = _account(request, wedding_id, op=op)
    webhook = event_webhook_of(account_id=account.pk, wedding_id=wedding_id, webhook_id=min(webhook_id, ID_MAX))
    if webhook is None:
        raise Refused(code="not_found", message=f"This account has no webhook subscription {webhook_id} here.")
    return webhook


class EventWebhookListView(APIView):
    api_key_scopes = {"GET": ApiScope.WEBHOOKS, "POST": ApiScope.WEBHOOKS}
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="wedding_webhooks_list",
        responses={200: EventWebhookSerializer(many=True), **_ERRORS},
        summary="Your service account's event webhook subscriptions to a wedding",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        try:
            account = _account(request, wedding_id, op="list")
        except Refused as refused:
            return refused_response(refused)
        webhooks = event_webhooks_of(account_id=account.pk, wedding_id=wedding_id)
        return Response([_shown(webhook) for webhook in webhooks])

    @extend_schema(
        request=EventWebhookCreateRequest,
        parameters=[IDEMPOTENCY_KEY_HEADER],
        responses={
            201: EventWebhookSerializer,
            **_ERRORS,
            422: OpenApiResponse(
                ErrorResponse,
                description="`invalid`: a URL the webhook rules refuse, too many subscriptions, or a reused key.",
            ),
            428: OpenApiResponse(ErrorResponse, description="`precondition_required`: no Idempotency-Key."),
        },
        summary="Subscribe a URL to a wedding's events (the answer shows its signing secret, once)",
    )
    def post(self, request: Request, wedding_id: int) -> Response:
        try:
            account = _account(request, wedding_id, op="create")
        except Refused as refused:
            return refused_response(refused)
        key = idempotency_key(request)
        body = EventWebhookCreateRequest(data=request.data)
        body.is_valid(raise_exception=True)
        if unstorable(body.validated_data["url"]):
            return unstorable_response()
        made: dict[str, str] = {}

        def create() -> tuple[int, dict[str, Any]]:
            webhook, secret = event_webhook_create(
                account=account,
                wedding_id=wedding_id,
                url=body.validated_data["url"],
                event_types=body.validated_data["event_types"],
                actor=request.user,  # type: ignore[arg-type]  # a key's account user
                client=ClientInfo.from_request(request),
            )
            made["secret"] = secret
            # Stored for a retry with the same key without the secret: a replay must not hand it
            # out again (decision 0032). The first answer gets it below.
            return status.HTTP_201_CREATED, _shown(webhook)

        response = created_once(request, key=key, create=create)
        if response.status_code == status.HTTP_201_CREATED:
            # Not to a replay, even one whose own create ran and lost the race (its secret is void).
            if "secret" in made and "Idempotent-Replayed" not in response:
                response.data = {**response.data, "secret": made["secret"]}
            response["Location"] = reverse(
                "wedding-webhook", kwargs={"wedding_id": wedding_id, "webhook_id": response.data["id"]}
            )
        return response


class EventWebhookDetailView(APIView):
    api_key_scopes = {"GET": ApiScope.WEBHOOKS, "DELETE": ApiScope.WEBHOOKS}

    @extend_schema(
        responses={200: EventWebhookSerializer, **_ERRORS}, summary="One subscription and its delivery state"
    )
    def get(self, request: Request, wedding_id: int, webhook_id: int) -> Response:
        try:
            webhook = _webhook(request, wedding_id, webhook_id, op="view")
        except Refused as refused:
            return refused_response(refused)
        return Response(_shown(webhook))

    @extend_schema(request=None, responses={204: None, **_ERRORS}, summary="Unsubscribe: nothing more is sent")
    def delete(self, request: Request, wedding_id: int, webhook_id: int) -> Response:
        try:
            webhook = _webhook(request, wedding_id, webhook_id, op="delete")
        except Refused as refused:
            return refused_response(refused)
        event_webhook_delete(webhook=webhook, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]
        return Response(status=status.HTTP_204_NO_CONTENT)


class EventWebhookRotateView(APIView):
    api_key_scopes = {"POST": ApiScope.WEBHOOKS}

    @extend_schema(
        request=None,
        responses={200: EventWebhookSerializer, **_ERRORS},
        summary="A new signing secret, shown in this answer only; the next attempt is signed with it",
    )
    def post(self, request: Request, wedding_id: int, webhook_id: int) -> Response:
        try:
            webhook = _webhook(request, wedding_id, webhook_id, op="rotate")
        except Refused as refused:
            return refused_response(refused)
        webhook, secret = event_webhook_secret_rotate(
            webhook=webhook,
            actor=request.user,  # type: ignore[arg-type]
            client=ClientInfo.from_request(request),
        )
        return Response(_shown(webhook, secret=secret))


class EventWebhookResumeView(APIView):
    api_key_scopes = {"POST": ApiScope.WEBHOOKS}

    @extend_schema(
        request=None,
        responses={200: EventWebhookSerializer, **_ERRORS},
        summary="Resume a paused subscription where it stopped (idempotent)",
    )
    def post(self, request: Request, wedding_id: int, webhook_id: int) -> Response:
        try:
            webhook = _webhook(request, wedding_id, webhook_id, op="resume")
        except Refused as refused:
            return refused_response(refused)
        event_webhook_resume(
            webhook_id=webhook.pk,
            actor=request.user,  # type: ignore[arg-type]
            client=ClientInfo.from_request(request),
        )
        webhook.refresh_from_db()
        return Response(_shown(webhook))
