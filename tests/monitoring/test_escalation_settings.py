"""The escalation webhook's settings stop start-up when they are malformed or incomplete."""

from __future__ import annotations

import secrets

import pytest

from tests.wedsync.test_settings import _production_env, _start_with

SECRET = secrets.token_urlsafe(32)


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"WEDSYNC_ESCALATION_WEBHOOK_URL": "https://hooks.example.com/wedsync"}, "SECRET must be set"),
        (
            {"WEDSYNC_ESCALATION_WEBHOOK_URL": "https://hooks.example.com/w", "WEDSYNC_ESCALATION_WEBHOOK_SECRET": "s"},
            "at least 32 characters",
        ),
        (
            {
                "WEDSYNC_ESCALATION_WEBHOOK_URL": "http://hooks.example.com/w",
                "WEDSYNC_ESCALATION_WEBHOOK_SECRET": SECRET,
            },
            "WEDSYNC_ESCALATION_WEBHOOK_URL must be an https:// URL",
        ),
        ({"WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS": "0"}, "WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS must be at least 1"),
        ({"WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS": "5s"}, "WEDSYNC_ESCALATION_WEBHOOK_BACKOFF_SECONDS must be"),
        ({"WEDSYNC_ESCALATION_LOOKBACK_SECONDS": "60"}, "must be longer than WEDSYNC_ESCALATION_AFTER_SECONDS"),
    ],
)
def test_a_bad_escalation_setting_stops_start_up(env: dict[str, str], complaint: str) -> None:
    result = _start_with({**_production_env(), **env})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert complaint in result.stderr


def test_a_complete_webhook_configuration_starts_and_schedules_the_beat_task() -> None:
    env = {
        **_production_env(),
        "WEDSYNC_ESCALATION_WEBHOOK_URL": "https://hooks.example.com/wedsync",
        "WEDSYNC_ESCALATION_WEBHOOK_SECRET": SECRET,
        "WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS": "4",
    }
    result = _start_with(
        env,
        "-c",
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.WEDSYNC_ESCALATION_WEBHOOK_ATTEMPTS, "
        "s.CELERY_BEAT_SCHEDULE['monitoring-escalate-unacknowledged']['task'])",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "monitoring.tasks.escalate_unacknowledged"]
