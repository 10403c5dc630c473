"""/metrics behind a proxy: a bearer token from the environment, an optional address list read
through the trusted proxy chain, closed in production without a token."""

from __future__ import annotations

import ipaddress

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings

from tests.wedsync.test_settings import _production_env, _start_with
from wedsync.models import AuditLog

pytestmark = pytest.mark.django_db

TOKEN = "a-metrics-token-for-these-tests-" + "x" * 8


def scrape(*, address: str = "203.0.113.50", token: str | None = None, forwarded_for: str | None = None) -> int:
    headers = {}
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return Client(REMOTE_ADDR=address).get("/metrics", **headers).status_code  # type: ignore[arg-type]


@override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[])
def test_with_a_token_any_address_may_scrape_with_it_and_none_without() -> None:
    assert scrape(token=TOKEN) == 200
    assert scrape(token=TOKEN[:-1] + "y") == 401
    assert scrape(token="") == 401
    assert scrape() == 401
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


@override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[ipaddress.ip_network("10.8.0.0/16")])
def test_an_address_list_narrows_who_may_use_the_token() -> None:
    assert scrape(address="10.8.3.4", token=TOKEN) == 200
    assert scrape(address="10.9.3.4", token=TOKEN) == 403
    assert scrape(address="10.8.3.4") == 401


@override_settings(METRICS_TOKEN=None, DEBUG=False)
def test_production_without_a_token_is_closed_even_to_loopback() -> None:
    # A proxy on the same host makes every request come from 127.0.0.1.
    assert scrape(address="127.0.0.1") == 403


@override_settings(METRICS_TOKEN=None, DEBUG=True, METRICS_ALLOWED_NETWORKS=[], TRUSTED_PROXIES=1)
def test_debug_without_a_token_serves_loopback_clients_only_behind_the_proxy_too() -> None:
    assert scrape(address="127.0.0.1") == 200
    assert scrape(address="127.0.0.1", forwarded_for="203.0.113.9") == 403  # the proxy's client is outside


@override_settings(METRICS_TOKEN=None, DEBUG=False)
def test_check_deploy_warns_without_a_token() -> None:
    with pytest.raises(SystemCheckError, match=r"monitoring\.W001"):
        call_command("check", "--deploy", "--fail-level", "WARNING", "--tag", "security")


def test_the_token_and_the_address_list_come_from_the_environment() -> None:
    env = {**_production_env(), "METRICS_TOKEN": TOKEN, "METRICS_ALLOWED_IPS": "10.8.0.0/16, 192.0.2.7"}
    script = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.METRICS_TOKEN == " + repr(TOKEN) + ", *map(str, s.METRICS_ALLOWED_NETWORKS))"
    )
    result = _start_with(env, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "10.8.0.0/16", "192.0.2.7/32"]


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("METRICS_TOKEN", "short", "METRICS_TOKEN must be at least 32 characters"),
        ("METRICS_ALLOWED_IPS", "10.0.0.0/8,prometheus", "METRICS_ALLOWED_IPS: 'prometheus' is not an address"),
    ],
)
def test_bad_metrics_settings_stop_start_up(variable: str, value: str, complaint: str) -> None:
    result = _start_with({**_production_env(), variable: value})
    assert result.returncode != 0 and complaint in result.stderr


def test_the_test_settings_carry_a_token() -> None:
    assert settings.METRICS_TOKEN and len(settings.METRICS_TOKEN) >= 32


@override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[])
def test_a_refused_scrape_is_audited() -> None:
    assert scrape(address="203.0.113.50", token="guess" * 8) == 401
    [row] = AuditLog.objects.filter(action="metrics.refuse")
    assert (row.ip, row.details["reason"], row.target) == ("203.0.113.50", "bad_token", "GET /metrics")
