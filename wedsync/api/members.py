"""A wedding's members over the staff API (issue 20): list, invite by e-mail, change, remove. Every
change goes through wedsync.services.members, so it is audited and reaches live sockets (the
control path: ``unsubscribed`` and a token revocation). Thin: validate, check, call, shape."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as ModelValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wedsync.api.conventions import (
    ID_MAX,
    IDEMPOTENCY_KEY_HEADER,
    created_once,
    idempotency_key,
    invalid_response,
    refused_response,
    unstorable_response,
)
from wedsync.api.serializers import ErrorResponse, StorableText, unstorable
from wedsync.api.weddings import wedding_visible
from wedsync.models import ApiScope, Member
from wedsync.permissions import ROLE_CHOICES
from wedsync.refusals import Refused
from wedsync.services.audit import ClientInfo
from wedsync.services.members import (
    member_invite,
    member_manage_check,
    member_may_manage,
    member_remove,
    member_save,
)


class MemberSerializer(serializers.ModelSerializer[Member]):
    name = serializers.CharField(read_only=True)
    email = serializers.CharField(source="user.email", read_only=True, help_text="Empty when not known.")

    class Meta:
        model = Member
        fields: tuple[str, ...] = (
            "id",
            "name",
            "email",
            "role",
            "display_name",
            "is_key_person",
            "vendor_company",
            "vendor_contact",
            "is_active",
            "joined_at",
        )
        read_only_fields = fields


class MemberPublicSerializer(MemberSerializer):
    """What every member of the wedding sees of the others: no e-mail, no vendor contact."""

    class Meta(MemberSerializer.Meta):
        fields = (
            "id",
            "name",
            "role",
            "display_name",
            "is_key_person",
            "vendor_company",
            "is_active",
            "joined_at",
        )
        read_only_fields = fields


class MemberInviteRequest(serializers.Serializer[None]):
    email = serializers.EmailField(max_length=254)
    first_name = StorableText(max_length=150, required=False, allow_blank=True, default="")
    last_name = StorableText(max_length=150, required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=ROLE_CHOICES)
    display_name = StorableText(max_length=150, required=False, allow_blank=True)
    is_key_person = serializers.BooleanField(required=False)
    vendor_company = StorableText(max_length=200, required=False, allow_blank=True)
    vendor_contact = StorableText(max_length=200, required=False, allow_blank=True)


class MemberChangeRequest(serializers.Serializer[None]):
    role = serializers.ChoiceField(choices=ROLE_CHOICES, required=False)
    display_name = StorableText(max_length=150, required=False, allow_blank=True)
    is_key_person = serializers.BooleanField(required=False)
    vendor_company = StorableText(max_length=200, required=False, allow_blank=True)
    vendor_contact = StorableText(max_length=200, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)


_ERRORS: dict[int, Any] = {403: ErrorResponse, 404: ErrorResponse}


def _is_key(request: Request) -> bool:
    return request.auth is not None and hasattr(request.auth, "service_account")


class MemberListView(APIView):
    api_key_scopes = {"POST": ApiScope.MEMBERS}

    @extend_schema(
        operation_id="wedding_members_list",
        responses={200: MemberSerializer(many=True), **_ERRORS},
        summary="A wedding's members (e-mails and vendor contacts only for those who manage them)",
    )
    def get(self, request: Request, wedding_id: int) -> Response:
        try:
            wedding = wedding_visible(request, wedding_id, write=False)
        except Refused as refused:
            return refused_response(refused)
        members = wedding.members.select_related("user").order_by("role", "id")
        manager = member_may_manage(user=request.user, wedding_id=wedding_id, is_key=_is_key(request))
        shape = MemberSerializer if manager else MemberPublicSerializer
        return Response(shape(members, many=True).data)

    @extend_schema(
        request=MemberInviteRequest,
        parameters=[IDEMPOTENCY_KEY_HEADER],
        responses={
            201: MemberSerializer,
            **_ERRORS,
            409: OpenApiResponse(ErrorResponse, description="`conflict`: a member already."),
            422: OpenApiResponse(ErrorResponse, description="`invalid`: not a valid member, or a reused key."),
            428: OpenApiResponse(ErrorResponse, description="`precondition_required`: no Idempotency-Key."),
        },
        summary="Add the person with this e-mail (an account is made for a newcomer)",
    )
    def post(self, request: Request, wedding_id: int) -> Response:
        client = ClientInfo.from_request(request)
        try:
            _ids(wedding_id)
            member_manage_check(user=request.user, wedding_id=wedding_id, is_key=_is_key(request), client=client)
        except Refused as refused:
            return refused_response(refused)
        key = idempotency_key(request)
        body = MemberInviteRequest(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        if unstorable(fields):
            return unstorable_response()
        person = {name: fields.pop(name) for name in ("email", "first_name", "last_name")}

        def create() -> tuple[int, dict[str, Any]]:
            member = member_invite(wedding_id=wedding_id, **person, fields=fields, actor=request.user, client=client)  # type: ignore[arg-type]
            return status.HTTP_201_CREATED, dict(MemberSerializer(member).data)

        return created_once(request, key=key, create=create)


class MemberDetailView(APIView):
    api_key_scopes = {"PATCH": ApiScope.MEMBERS, "DELETE": ApiScope.MEMBERS}

    @extend_schema(
        request=MemberChangeRequest,
        responses={200: MemberSerializer, **_ERRORS, 422: ErrorResponse},
        summary="Change a member (a role change ends their sockets' subscription and their tokens)",
    )
    def patch(self, request: Request, wedding_id: int, member_id: int) -> Response:
        try:
            member = _member(request, wedding_id, member_id)
        except Refused as refused:
            return refused_response(refused)
        body = MemberChangeRequest(data=request.data)
        body.is_valid(raise_exception=True)
        if unstorable(dict(body.validated_data)):
            return unstorable_response()
        for name, value in body.validated_data.items():
            setattr(member, name, value)
        try:
            member_save(member=member, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]
        except ModelValidationError as error:
            return invalid_response(error)
        return Response(MemberSerializer(member).data)

    @extend_schema(request=None, responses={204: None, **_ERRORS}, summary="Remove a member from the wedding")
    def delete(self, request: Request, wedding_id: int, member_id: int) -> Response:
        try:
            member = _member(request, wedding_id, member_id)
        except Refused as refused:
            return refused_response(refused)
        member_remove(member=member, actor=request.user, client=ClientInfo.from_request(request))  # type: ignore[arg-type]
        return Response(status=status.HTTP_204_NO_CONTENT)


def _ids(*ids: int) -> None:
    if any(value > ID_MAX for value in ids):
        raise Refused(code="not_found", message="No such wedding or member.")


def _member(request: Request, wedding_id: int, member_id: int) -> Member:
    _ids(wedding_id, member_id)
    member_manage_check(
        user=request.user, wedding_id=wedding_id, is_key=_is_key(request), client=ClientInfo.from_request(request)
    )
    member = Member.objects.select_related("user").filter(pk=member_id, wedding_id=wedding_id).first()
    if member is None:
        raise Refused(code="not_found", message=f"There is no member {member_id} in this wedding.")
    return member
