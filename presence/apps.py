from django.apps import AppConfig


class PresenceConfig(AppConfig):
    name = "presence"
    verbose_name = "Presence"

    def ready(self) -> None:
        # The event log runs these inside a publish's transaction without importing presence.
        from presence.emergency.selectors import emergencies_open_ids
        from presence.emergency.services import EmergencyAlarmGate
        from realtime.names import EventType
        from realtime.services.publish_hooks import publish_gate_register, reach_widening_register

        publish_gate_register(event_type=EventType.EMERGENCY_ALERT, gate=EmergencyAlarmGate())
        reach_widening_register(widening=emergencies_open_ids)
