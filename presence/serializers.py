from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from presence.alerts.selectors import AlertState
from presence.models import Alert

# A wedding-day's alerts are tens, a long wedding's history a few hundred: one page, bounded.
ALERTS_PAGE_DEFAULT = 100
ALERTS_PAGE_MAX = 500


class AlertListQuery(serializers.Serializer[None]):
    state = serializers.ChoiceField(choices=[state.value for state in AlertState], default=AlertState.OPEN.value)
    limit = serializers.IntegerField(min_value=1, max_value=ALERTS_PAGE_MAX, default=ALERTS_PAGE_DEFAULT)


class AlertMemberSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    role = serializers.CharField()
    name = serializers.CharField()


class AlertSerializer(serializers.ModelSerializer[Alert]):
    member = serializers.SerializerMethodField()
    acknowledged_by = serializers.SerializerMethodField(help_text="The username of whoever acknowledged it.")
    open = serializers.BooleanField(source="is_open", read_only=True)

    class Meta:
        model = Alert
        fields = (
            "id",
            "wedding",
            "kind",
            "severity",
            "member",
            "device",
            "message",
            "raised_at",
            "notified_at",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "open",
        )
        read_only_fields = fields

    def get_acknowledged_by(self, alert: Alert) -> str | None:
        user = alert.acknowledged_by
        return None if user is None else user.get_username()

    @extend_schema_field(AlertMemberSerializer(allow_null=True))
    def get_member(self, alert: Alert) -> dict[str, Any] | None:
        member = alert.member
        if member is None:
            return None
        return {"id": member.pk, "role": member.role, "name": member.name}


class AlertListResponse(serializers.Serializer[None]):
    alerts = AlertSerializer(many=True)
    more = serializers.BooleanField(help_text="More alerts match than ``limit`` returned.")


class _Error(serializers.Serializer[None]):
    code = serializers.CharField(help_text="forbidden, not_found, invalid, unauthorized")
    message = serializers.CharField()


class ErrorResponse(serializers.Serializer[None]):
    error = _Error()
