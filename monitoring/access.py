"""Who may read ``/metrics``: a bearer token from the environment, and optionally an address list.

Behind a proxy every request comes from the proxy's address, so an address list alone opens the
metrics to anyone the proxy serves. With ``METRICS_TOKEN`` set, every scrape must carry
``Authorization: Bearer <token>`` (compared in constant time); ``METRICS_ALLOWED_IPS``, when set,
must also hold the client's address (read through the trusted proxy chain). Without a token only
a DEBUG process answers, and only to ``METRICS_ALLOWED_IPS`` (loopback by default); in production
``/metrics`` is closed and ``check --deploy`` warns (decision 0024).
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOOPBACK: tuple[IpNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class MetricsRefusal(enum.StrEnum):
    NOT_CONFIGURED = "not_configured"  # production without METRICS_TOKEN
    BAD_TOKEN = "bad_token"  # noqa: S105  (a reason, not a secret): missing or wrong bearer token
    ADDRESS = "address"  # not in METRICS_ALLOWED_IPS


def _bearer(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _address_allowed(address: str | None, networks: Sequence[IpNetwork]) -> bool:
    if address is None:
        return False
    ip = ipaddress.ip_address(address)  # client_address() hands out valid addresses only
    return any(ip in network for network in networks)


def metrics_scrape_refusal(*, authorization: str | None, address: str | None) -> MetricsRefusal | None:
    """Why a scrape with this ``Authorization`` header from this client address is refused, or None."""
    token: str | None = settings.METRICS_TOKEN
    networks: Sequence[IpNetwork] = settings.METRICS_ALLOWED_NETWORKS
    if token is None:
        if not settings.DEBUG:
            return MetricsRefusal.NOT_CONFIGURED
        return None if _address_allowed(address, networks or _LOOPBACK) else MetricsRefusal.ADDRESS
    presented = _bearer(authorization)
    if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
        return MetricsRefusal.BAD_TOKEN
    if networks and not _address_allowed(address, networks):
        return MetricsRefusal.ADDRESS
    return None


@register(Tags.security, deploy=True)  # imported by MonitoringConfig.ready()
def metrics_token_check(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if settings.METRICS_TOKEN is None and not settings.DEBUG:
        return [
            CheckWarning(
                "METRICS_TOKEN is not set: /metrics answers 403 to every scraper.",
                hint="Set METRICS_TOKEN (32+ random characters) and give Prometheus the same bearer token.",
                id="monitoring.W001",
            )
        ]
    return []
