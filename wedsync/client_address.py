"""The address a request or a socket came from, read through the trusted proxy chain.

Every proxy in front appends the address it heard from to ``X-Forwarded-For``, so with
``TRUSTED_PROXIES = n`` the client is the n-th entry from the right: the entries left of it were
written by whoever connected, and anyone may send any. With 0 the header is ignored. This is the
rule Django REST framework applies with ``NUM_PROXIES``; the API's throttles, the admin's login
lockout, the audit log, the socket side and ``/metrics`` all read addresses here, so they agree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest


def _valid_address(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_address(*, peer: str | None, forwarded_for: str | None, trusted_proxies: int | None = None) -> str | None:
    """The client's address, given the connection's ``peer`` and the ``X-Forwarded-For`` value.

    ``trusted_proxies`` defaults to the ``TRUSTED_PROXIES`` setting. An entry that is not an
    address (only a misconfigured proxy would write one) counts as absent: the peer is used, so a
    bad header never reaches the audit log's address column or splits a throttle's bucket.
    """
    hops = settings.TRUSTED_PROXIES if trusted_proxies is None else trusted_proxies
    peer_address = _valid_address(peer)
    if hops == 0 or not forwarded_for:
        return peer_address
    entries = forwarded_for.split(",")
    return _valid_address(entries[-min(hops, len(entries))]) or peer_address


def request_client_address(request: HttpRequest) -> str | None:
    """:func:`client_address` of an HTTP request (also django-axes' ``AXES_CLIENT_IP_CALLABLE``)."""
    return client_address(peer=request.META.get("REMOTE_ADDR"), forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"))


def scope_header_values(scope: Mapping[str, Any], name: bytes) -> list[str]:
    """Every value of an ASGI scope's header ``name`` (lower case), in the order sent."""
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    return [value.decode("latin1") for key, value in headers if key.lower() == name]


def scope_client_address(scope: Mapping[str, Any]) -> str | None:
    """:func:`client_address` of an ASGI connection (a socket's handshake)."""
    peer = scope.get("client") or (None,)
    # Repeated header lines are one comma-separated list, as in HTTP (and in Django's ASGI requests).
    forwarded_for = ",".join(scope_header_values(scope, b"x-forwarded-for")) or None
    return client_address(peer=peer[0], forwarded_for=forwarded_for)
