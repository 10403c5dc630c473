"""Weddings over the staff API (issue 20): list (date range, status, archived; cursor pages), create
(``Idempotency-Key``), retrieve (``ETag``), update (``If-Match``), archive. Thin: validate, call one
selector or service, shape the reply. Members and staff see what they may; keys need their scopes."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError as ModelValidationError
from django.db.models import CharField, F, Func, Value
from django.db.models.functions import Cast, Concat, LPad
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wedsync.api.conventions import (
    ID_MAX,
    IDEMPOTENCY_KEY_HEADER,
    CheckedCursorPagination,
    created_once,
    idempotency_key,
    invalid_response,
    refused_response,
    replayed_response,
    unstorable_response,
)
from wedsync.api.errors import PreconditionRequired
from wedsync.api.serializers import ErrorResponse, StorableText, StrictQuery, unstorable
from wedsync.models import ApiScope, Wedding, WeddingStatus
from wedsync.refusals import Refused
from wedsync.selectors import weddings_visible
from wedsync.services.audit import ClientInfo
from wedsync.services.idempotency import idempotent_stored, request_fingerprint
from wedsync.services.weddings import (
    wedding_access_check,
    wedding_agency_for_create,
    wedding_archive,
    wedding_create,
    wedding_create_allowed,
    wedding_create_refusal_audit,
    wedding_etag,
    wedding_update,
)

ETAG = re.compile(r'^"[0-9]{1,19}-[0-9]{1,20}"$')


class WeddingSerializer(serializers.ModelSerializer[Wedding]):
    class Meta:
        model = Wedding
        fields = (
            "id",
            "name",
            "slug",
            "date",
            "time_zone",
            "venue_name",
            "venue_address",
            "ceremony_at",
            "status",
            "agency",
            "archived_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class WeddingCreateRequest(serializers.Serializer[None]):
    name = StorableText(min_length=1, max_length=200)
    date = serializers.DateField(help_text="The wedding day, in the wedding's own time zone.")
    time_zone = StorableText(min_length=1, max_length=64, help_text="IANA, e.g. Europe/Lisbon.")
    ceremony_at = serializers.DateTimeField(help_text="On the wedding's local day.")
    venue_name = StorableText(max_length=200, required=False, allow_blank=True)
    venue_address = StorableText(required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=WeddingStatus.choices, required=False)
    agency = serializers.IntegerField(
        required=False, help_text="Required unless you are a superuser; one whose weddings you oversee."
    )


class WeddingUpdateRequest(serializers.Serializer[None]):
    name = StorableText(min_length=1, max_length=200, required=False)
    date = serializers.DateField(required=False)
    time_zone = StorableText(min_length=1, max_length=64, required=False)
    ceremony_at = serializers.DateTimeField(required=False)
    venue_name = StorableText(max_length=200, required=False, allow_blank=True)
    venue_address = StorableText(required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=WeddingStatus.choices, required=False)


class WeddingListQuery(StrictQuery):
    date_after = serializers.DateField(required=False, help_text="On or after this day.")
    date_before = serializers.DateField(required=False, help_text="On or before this day.")
    status = serializers.ChoiceField(choices=WeddingStatus.choices, required=False)
    archived = serializers.BooleanField(required=False, default=False, help_text="Archived weddings instead.")
    cursor = serializers.CharField(
        required=False, min_length=1, help_text="From the previous page's next or previous link."
    )
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class WeddingPage(serializers.Serializer[None]):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = WeddingSerializer(many=True)


class WeddingCursor(CheckedCursorPagination):
    """By day, then id. DRF places a cursor on one field, so that field is both in one unique key
    (``2027-06-12:0000000000000000042``): a page boundary on a busy day then never skips or repeats
    a wedding added or archived meanwhile (one whose date is changed across the boundary may be)."""

    ordering = "day_key"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    position_format = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}:[0-9]{19}$")

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        # to_char with an explicit format: a cast would follow the session's DateStyle.
        day = Func(F("date"), Value("YYYY-MM-DD"), function="to_char", output_field=CharField())
        padded_id = LPad(Cast("id", CharField()), 19, Value("0"))
        day_key = Concat(day, Value(":"), padded_id, output_field=CharField())
        return super().paginate_queryset(queryset.annotate(day_key=day_key), request, view)


def _with_etag(wedding: Wedding, *, status_code: int = 200) -> Response:
    response = Response(WeddingSerializer(wedding).data, status=status_code)
    response["ETag"] = wedding_etag(wedding)
    return response


_ERRORS: dict[int, Any] = {403: ErrorResponse, 404: ErrorResponse}


class WeddingListView(APIView):
    api_key_scopes = {"POST": ApiScope.WEDDINGS}

    @extend_schema(
        operation_id="weddings_list",
        parameters=[WeddingListQuery],
        responses={200: WeddingPage, 404: OpenApiResponse(ErrorResponse, description="`not_found`: a bad cursor.")},
        summary="The weddings you may see (members: theirs; staff and keys: those they oversee), by day",
    )
    def get(self, request: Request) -> Response:
        query = WeddingListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        weddings = weddings_visible(user=request.user).filter(archived_at__isnull=not filters["archived"])
        if "date_after" in filters:
            weddings = weddings.filter(date__gte=filters["date_after"])
        if "date_before" in filters:
            weddings = weddings.filter(date__lte=filters["date_before"])
        if "status" in filters:
            weddings = weddings.filter(status=filters["status"])
        paginator = WeddingCursor()
        page = paginator.paginate_queryset(weddings, request, view=self)
        return paginator.get_paginated_response(WeddingSerializer(page, many=True).data)

    @extend_schema(
        request=WeddingCreateRequest,
        parameters=[IDEMPOTENCY_KEY_HEADER],
        responses={
            201: WeddingSerializer,
            403: ErrorResponse,
            422: OpenApiResponse(
                ErrorResponse,
                description="`invalid`: not a valid wedding (`fields`: an unknown time zone, the ceremony off its "
                "day), or the key was used for another request.",
            ),
            428: OpenApiResponse(ErrorResponse, description="`precondition_required`: no Idempotency-Key."),
        },
        summary="Create a wedding in an agency you oversee (a retry with the same key gets the same answer)",
    )
    def post(self, request: Request) -> Response:
        account = getattr(request.auth, "service_account", None)
        if not wedding_create_allowed(user=request.user, account=account):
            message = "You may not create weddings."
            client = ClientInfo.from_request(request)
            return refused_response(
                wedding_create_refusal_audit(user=request.user, message=message, agency_id=None, client=client)
            )
        key = idempotency_key(request)
        body = WeddingCreateRequest(data=request.data)
        body.is_valid(raise_exception=True)
        if unstorable(body.validated_data):
            return unstorable_response()
        fields = _trimmed(body.validated_data)
        client = ClientInfo.from_request(request)
        user = request.user
        try:
            answer = idempotent_stored(
                user=user,  # type: ignore[arg-type]
                key=key,
                path=request.path,
                fingerprint=request_fingerprint(request.data),
            )
            agency = (
                None
                if answer is not None
                else wedding_agency_for_create(
                    user=user,
                    agency_id=fields.pop("agency", None),
                    account=getattr(request.auth, "service_account", None),
                    client=client,
                )
            )
        except Refused as refused:
            return refused_response(refused)
        if answer is not None:
            return _located(replayed_response(answer))

        def create() -> tuple[int, dict[str, Any]]:
            wedding = wedding_create(fields=fields, agency=agency, actor=request.user, client=client)  # type: ignore[arg-type]
            return status.HTTP_201_CREATED, dict(WeddingSerializer(wedding).data)

        return _located(created_once(request, key=key, create=create))


class WeddingDetailView(APIView):
    api_key_scopes = {"PATCH": ApiScope.WEDDINGS}

    @extend_schema(responses={200: WeddingSerializer, **_ERRORS}, summary="One wedding, with its ETag")
    def get(self, request: Request, wedding_id: int) -> Response:
        try:
            wedding = wedding_visible(request, wedding_id, write=False)
        except Refused as refused:
            return refused_response(refused)
        return _with_etag(wedding)

    @extend_schema(
        request=WeddingUpdateRequest,
        parameters=[
            OpenApiParameter(
                "If-Match",
                str,
                OpenApiParameter.HEADER,
                required=True,
                pattern=ETAG.pattern,
                description="The ETag the wedding was read with. Missing: 428.",
            )
        ],
        responses={
            200: WeddingSerializer,
            **_ERRORS,
            412: OpenApiResponse(ErrorResponse, description="`conflict`: changed since you read it (ETag)."),
            422: OpenApiResponse(ErrorResponse, description="`invalid`: the result would not be a valid wedding."),
            428: OpenApiResponse(ErrorResponse, description="`precondition_required`: no If-Match."),
        },
        summary="Change a wedding you oversee, if it is still as you read it (If-Match: its ETag)",
    )
    def patch(self, request: Request, wedding_id: int) -> Response:
        try:
            wedding_visible(request, wedding_id, write=True)
        except Refused as refused:
            return refused_response(refused)
        etag = request.headers.get("If-Match")
        if etag is None:
            raise PreconditionRequired("Send If-Match with the ETag you read, so nobody's change is overwritten.")
        if not ETAG.fullmatch(etag):
            raise exceptions.ValidationError({"If-Match": ['The ETag as read: "<id>-<version>".']})
        body = WeddingUpdateRequest(data=request.data)
        body.is_valid(raise_exception=True)
        if unstorable(body.validated_data):
            return unstorable_response()
        try:
            wedding = wedding_update(
                wedding_id=wedding_id,
                changes=_trimmed(body.validated_data),
                expected_etag=etag,
                actor=request.user,  # type: ignore[arg-type]
                client=ClientInfo.from_request(request),
            )
        except ModelValidationError as error:
            return invalid_response(error)
        except Refused as refused:
            return refused_response(refused, conflict=status.HTTP_412_PRECONDITION_FAILED)
        return _with_etag(wedding)


class WeddingArchiveView(APIView):
    api_key_scopes = {"POST": ApiScope.WEDDINGS}

    @extend_schema(
        request=None, responses={200: WeddingSerializer, **_ERRORS}, summary="Archive a wedding (idempotent)"
    )
    def post(self, request: Request, wedding_id: int) -> Response:
        try:
            wedding_visible(request, wedding_id, write=True)
        except Refused as refused:
            return refused_response(refused)
        try:
            wedding = wedding_archive(
                wedding_id=wedding_id,
                actor=request.user,  # type: ignore[arg-type]
                client=ClientInfo.from_request(request),
            )
        except Refused as refused:  # deleted since the check above
            return refused_response(refused)
        return _with_etag(wedding)


def _located(response: Response) -> Response:
    """A creation's answer (the first or a replay) says where the wedding lives."""
    if response.status_code == status.HTTP_201_CREATED:
        response["Location"] = reverse("wedding", kwargs={"wedding_id": response.data["id"]})
    return response


def _trimmed(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields with their text trimmed, as DRF would have: trimming after the schema's checks
    makes a blank name (say, one control character) the model's 422, not the schema's 400."""
    return {name: value.strip() if isinstance(value, str) else value for name, value in fields.items()}


def wedding_visible(request: Request, wedding_id: int, *, write: bool) -> Wedding:
    if wedding_id > ID_MAX:
        raise Refused(code="not_found", message="No such wedding.")
    is_key = request.auth is not None and hasattr(request.auth, "service_account")
    return wedding_access_check(
        user=request.user,
        wedding_id=wedding_id,
        write=write,
        needs_permission=write and not is_key,
        client=ClientInfo.from_request(request),
    )
