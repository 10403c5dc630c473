from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from presence.alerts.selectors import AlertState
from presence.emergency.selectors import EmergencyState, emergency_resolver_view
from presence.models import Alert, Emergency
from wedsync.api.serializers import StrictQuery

# A wedding-day's alerts are tens, a long wedding's history a few hundred: one page, bounded.
ALERTS_PAGE_DEFAULT = 100
ALERTS_PAGE_MAX = 500


class AlertListQuery(StrictQuery):
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


# --- Emergencies ------------------------------------------------------------------------------------

EMERGENCIES_PAGE_DEFAULT = 50
EMERGENCIES_PAGE_MAX = 200


class EmergencyListQuery(StrictQuery):
    state = serializers.ChoiceField(
        choices=[state.value for state in EmergencyState], default=EmergencyState.OPEN.value
    )
    limit = serializers.IntegerField(min_value=1, max_value=EMERGENCIES_PAGE_MAX, default=EMERGENCIES_PAGE_DEFAULT)


class EmergencyResolverSerializer(serializers.Serializer[Any]):
    member = serializers.IntegerField(allow_null=True)
    role = serializers.CharField(help_text="planner, or staff")
    name = serializers.CharField()


class EmergencySerializer(serializers.ModelSerializer[Emergency]):
    alert_seq = serializers.IntegerField(
        source="raised_event.seq", read_only=True, help_text="The emergency.alert's seq."
    )
    message = serializers.SerializerMethodField()
    location = serializers.SerializerMethodField()
    raised_by = serializers.SerializerMethodField()
    resolved_by = serializers.SerializerMethodField(
        help_text="Who resolved it, as emergency.resolved told the wedding: the planner, or staff."
    )
    open = serializers.SerializerMethodField()
    repeats = serializers.IntegerField(
        read_only=True, help_text="Further alarms its raiser sent while it was open (each an emergency.alert repeat)."
    )
    repeated_at = serializers.DateTimeField(read_only=True, allow_null=True, help_text="When the last repeat came.")

    class Meta:
        model = Emergency
        fields = (
            "id",
            "wedding",
            "alert_seq",
            "message",
            "location",
            "raised_by",
            "raised_at",
            "repeats",
            "repeated_at",
            "resolved_at",
            "resolved_by",
            "open",
        )
        read_only_fields = fields

    def get_message(self, emergency: Emergency) -> str:
        return str(emergency.raised_event.data.get("message", ""))

    def get_location(self, emergency: Emergency) -> str | None:
        location = emergency.raised_event.data.get("location")
        return None if location is None else str(location)

    @extend_schema_field(AlertMemberSerializer(allow_null=True))
    def get_raised_by(self, emergency: Emergency) -> dict[str, Any] | None:
        member = emergency.raised_by
        if member is None:
            return None
        return {"id": member.pk, "role": member.role, "name": member.name}

    @extend_schema_field(EmergencyResolverSerializer(allow_null=True))
    def get_resolved_by(self, emergency: Emergency) -> dict[str, Any] | None:
        user = emergency.resolved_by
        return None if user is None else emergency_resolver_view(user=user, wedding_id=emergency.wedding_id)

    def get_open(self, emergency: Emergency) -> bool:
        return emergency.resolved_at is None


class EmergencyListResponse(serializers.Serializer[None]):
    emergencies = EmergencySerializer(many=True)
    more = serializers.BooleanField(help_text="More emergencies match than ``limit`` returned.")


# --- Presence ---------------------------------------------------------------------------------------


class PresenceSnapshotResponse(serializers.Serializer[None]):
    """The subscribe reply's ``data.presence`` for the caller's role (PROTOCOL.md section 6)."""

    online = serializers.DictField(child=serializers.IntegerField(), help_text="Members online per role.")
    members = serializers.DictField(
        child=serializers.DictField(),
        required=False,
        help_text="Each member's merged state, by member id; only for roles with view_presence (and staff).",
    )
