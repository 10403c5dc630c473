"""Client addresses come through the trusted proxy chain (TRUSTED_PROXIES), DRF's NUM_PROXIES rule."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from wedsync.client_address import client_address
from wedsync.models import AuditLog

TOKEN_URL = reverse("token-obtain")


@pytest.mark.parametrize(
    ("hops", "forwarded_for", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.1"),  # nobody in front is trusted: the header is anyone's to forge
        (0, None, "10.0.0.1"),
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "198.51.100.66, 203.0.113.9", "203.0.113.9"),  # the left entry is the client's own claim
        (2, "198.51.100.66, 203.0.113.9, 10.0.0.7", "203.0.113.9"),
        (3, "203.0.113.9", "203.0.113.9"),  # fewer hops than proxies: the first one there is (DRF's rule)
        (1, " 2001:DB8::1 ", "2001:db8::1"),
        (1, "not-an-address", "10.0.0.1"),  # a broken header never reaches the audit's inet column
        (1, "", "10.0.0.1"),
    ],
)
def test_the_client_is_the_entry_the_trusted_proxies_wrote(hops: int, forwarded_for: str | None, expected: str) -> None:
    assert client_address(peer="10.0.0.1", forwarded_for=forwarded_for, trusted_proxies=hops) == expected


def test_a_peer_that_is_not_an_address_is_none() -> None:
    assert client_address(peer="", forwarded_for=None, trusted_proxies=0) is None
    assert client_address(peer=None, forwarded_for="203.0.113.9", trusted_proxies=0) is None


def _refusal_address(*, forwarded_for: str) -> str | None:
    api = APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)
    response = api.post(TOKEN_URL, {"username": "nobody", "password": "wrong"}, format="json")
    assert response.status_code == 401
    entry: AuditLog = AuditLog.objects.get(action="auth.token.refuse")
    return entry.ip


@pytest.mark.django_db
def test_a_spoofed_forwarded_for_is_ignored_when_no_proxy_is_trusted() -> None:
    assert _refusal_address(forwarded_for="203.0.113.9") == "10.0.0.1"


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_the_api_audits_the_client_not_the_proxy() -> None:
    assert _refusal_address(forwarded_for="198.51.100.66, 203.0.113.9") == "203.0.113.9"
