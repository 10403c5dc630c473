"""Event webhooks' settings (decision 0032) stop start-up when malformed, and beat runs the sweep."""

from __future__ import annotations

import pytest

from tests.wedsync.test_settings import _production_env, _start_with


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS": "61"}, "WEDSYNC_EVENT_WEBHOOK_TIMEOUT_SECONDS must be at most 60"),
        ({"WEDSYNC_EVENT_WEBHOOK_BATCH_MAX": "501"}, "WEDSYNC_EVENT_WEBHOOK_BATCH_MAX must be at most 500"),
        ({"WEDSYNC_EVENT_WEBHOOK_SWEEP_SECONDS": "0.5"}, "WEDSYNC_EVENT_WEBHOOK_SWEEP_SECONDS must be at least 1"),
    ],
)
def test_a_bad_event_webhook_setting_stops_start_up(env: dict[str, str], complaint: str) -> None:
    result = _start_with({**_production_env(), **env})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert complaint in result.stderr


def test_beat_sweeps_event_webhooks_at_the_configured_interval() -> None:
    result = _start_with(
        {**_production_env(), "WEDSYNC_EVENT_WEBHOOK_SWEEP_SECONDS": "3"},
        "-c",
        "import django; django.setup(); from django.conf import settings as s; "
        "entry = s.CELERY_BEAT_SCHEDULE['monitoring-deliver-event-webhooks']; "
        "print(entry['task'], entry['schedule'], entry['options']['expires'])",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["monitoring.tasks.deliver_event_webhooks", "3.0", "3.0"]
