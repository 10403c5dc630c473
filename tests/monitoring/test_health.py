from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import Client, override_settings

from tests.servers import redis_server

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_dependencies(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.requires_redis
@pytest.mark.requires_postgres
def test_readyz_is_ready_with_the_real_services(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    # Not a daphne node (no sockets served here), so its socket hub is not asked for.
    assert response.json()["checks"] == {"database": "ok", "channel_layer": "ok", "socket_hub": "ok", "drain": "ok"}


def test_readyz_names_a_stopped_redis(caplog: pytest.LogCaptureFixture) -> None:
    with redis_server() as server:
        layer = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": server.url}]},
            }
        }
        with override_settings(CHANNEL_LAYERS=layer):
            assert Client().get("/readyz").status_code == 200
            server.stop()
            with caplog.at_level(logging.INFO):
                response = Client().get("/readyz")
    assert response.status_code == 503
    # Said once, by the check, with what is down; not again as a server error for every probe.
    assert [
        (r.name, r.levelname) for r in caplog.records if "readiness" in r.getMessage() or r.name == "django.request"
    ] == [("monitoring.selectors", "WARNING")]
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["channel_layer"]
    assert body["checks"] == {"database": "ok", "channel_layer": "down", "socket_hub": "ok", "drain": "ok"}
    assert str(server.port) not in response.content.decode()  # no internals for the public


def test_metrics_are_only_for_scrapers_with_the_token(client: Client) -> None:
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401  # see test_metrics_access.py


def test_metrics_are_exported(client: Client) -> None:
    client.get("/healthz")
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert response.status_code == 200
    text = response.content.decode()
    assert "django_http_requests_total_by_view_transport_method_total" in text
    assert "wedsync_readiness_failures_total" in text


def test_admin_login_page_is_served(client: Client) -> None:
    assert client.get("/admin/login/").status_code == 200


def test_openapi_schema_describes_the_token_endpoints(client: Client) -> None:
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    assert b"/api/v1/auth/token/" in response.content and b"bearerAuth" in response.content
