"""The audit log over the staff API (issue 20): read-only, newest first, filterable by wedding,
actor, action, outcome and time, and scoped as the admin scopes it (selectors.audit_entries_visible)."""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from wedsync.api.conventions import ID_MAX, CheckedCursorPagination
from wedsync.api.serializers import ErrorResponse, StrictQuery
from wedsync.models import AuditLog, AuditOutcome
from wedsync.selectors import audit_entries_visible


class AuditEntrySerializer(serializers.ModelSerializer[AuditLog]):
    # Plain ids: an entry outlives the user or wedding it names.
    actor = serializers.IntegerField(source="actor_id", allow_null=True, help_text="The user's id, if any.")
    wedding = serializers.IntegerField(source="wedding_id", allow_null=True)
    details = serializers.DictField(help_text="What the action recorded; its keys depend on the action.")

    class Meta:
        model = AuditLog
        fields = (
            "id",
            "at",
            "actor",
            "actor_label",
            "wedding",
            "action",
            "target",
            "outcome",
            "ip",
            "user_agent",
            "details",
        )
        read_only_fields = fields


ACTION_NAME = r"^[a-z0-9_.]+$"  # every AuditAction is a dotted name of these


class AuditQuery(StrictQuery):
    wedding = serializers.IntegerField(required=False, min_value=1, max_value=ID_MAX)
    actor = serializers.IntegerField(required=False, min_value=1, max_value=ID_MAX, help_text="A user's id.")
    action = serializers.ListField(
        child=serializers.RegexField(ACTION_NAME, max_length=64),
        required=False,
        max_length=20,
        help_text="Dotted names, e.g. realtime.subscribe; repeat for several.",
    )
    action_prefix = serializers.RegexField(
        ACTION_NAME, required=False, max_length=64, help_text="e.g. `auth.` for every token and login entry."
    )
    outcome = serializers.ChoiceField(choices=AuditOutcome.choices, required=False)
    since = serializers.DateTimeField(required=False, help_text="Entries at or after this time.")
    until = serializers.DateTimeField(required=False, help_text="Entries before this time.")
    cursor = serializers.CharField(
        required=False, min_length=1, help_text="From the previous page's next or previous link."
    )
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class AuditPage(serializers.Serializer[None]):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = AuditEntrySerializer(many=True)


class AuditCursor(CheckedCursorPagination):
    """Newest first by id, which is unique and grows with every entry, so a page boundary never
    repeats an entry (one committed late, inside a long transaction, may land behind it)."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500
    position_format = re.compile(r"^[0-9]{1,19}$")


class AuditLogListView(APIView):
    @extend_schema(
        operation_id="audit_list",
        parameters=[AuditQuery],
        responses={
            200: AuditPage,
            403: OpenApiResponse(ErrorResponse, description="`forbidden`: not staff or a service account."),
            404: OpenApiResponse(ErrorResponse, description="`not_found`: a bad cursor."),
        },
        summary="Audit entries of the weddings you oversee, newest first (superusers: every entry)",
    )
    def get(self, request: Request) -> Response:
        user = request.user
        is_key = getattr(request.auth, "service_account", None) is not None  # its read scope was checked
        if not (is_key or user.has_perm("wedsync.view_auditlog")):  # as the admin asks of people
            raise exceptions.PermissionDenied("The audit log is for staff who may read it and service accounts.")
        query = AuditQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        entries = audit_entries_visible(user=user)
        if "wedding" in filters:
            entries = entries.filter(wedding_id=filters["wedding"])
        if "actor" in filters:
            entries = entries.filter(actor_id=filters["actor"])
        if filters.get("action"):
            entries = entries.filter(action__in=filters["action"])
        if "action_prefix" in filters:
            entries = entries.filter(action__startswith=filters["action_prefix"])
        if "outcome" in filters:
            entries = entries.filter(outcome=filters["outcome"])
        if "since" in filters:
            entries = entries.filter(at__gte=filters["since"])
        if "until" in filters:
            entries = entries.filter(at__lt=filters["until"])
        paginator = AuditCursor()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(AuditEntrySerializer(page, many=True).data)
