"""The node registry (issue 21): every daphne node reports itself into Redis every few seconds, with a
TTL, so that an operator sees the fleet (the staff API, the admin) and a node that stopped reporting
drops out of it on its own.

:class:`NodeReport` is the one struct a node writes and everyone else reads; this module alone
encodes and decodes it. The node measures (realtime/node/registry.py), monitoring.services.nodes
writes, monitoring.selectors reads.
"""

from __future__ import annotations

import functools

import msgspec
import redis
from django.conf import settings

from wedsync.redis_clients import redis_client

REPORT_TTL_INTERVALS = 3  # a report is kept for this many report intervals: then its node is gone


class RegistryUnavailable(Exception):
    """Redis, where the nodes report, did not answer."""


class NodeReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a node says about itself. Times are epoch seconds."""

    name: str  # REALTIME_NODE_NAME
    version: str  # the product's release (WEDSYNC_VERSION)
    started_at: float
    reported_at: float
    sockets: int  # open sockets
    subscriptions_by_role: dict[str, int]  # a socket counts once per wedding it follows, under its role there
    weddings: int  # weddings with at least one subscriber here
    cpu_percent: float  # of one core, since the previous report
    rss_bytes: int
    loop_lag_ms: float  # the event loop's worst lateness since the previous report
    draining: bool = False  # an operator asked it to drain: it closes its sockets a slice at a time
    # The 99th percentile of its delivery latency (commit to frames written) over about the last
    # minute, in ms; None when it delivered nothing meanwhile.
    delivery_p99_ms: float | None = None
    presence_p99_ms: float | None = None  # the same for presence diffs shown here (change to read)
    error_closes_last_minute: int = 0  # sockets closed 1011 (our error) over about the last minute


_decoder = msgspec.json.Decoder(NodeReport)


def node_report_encode(report: NodeReport) -> bytes:
    return msgspec.json.encode(report)


def node_report_decode(raw: bytes | str) -> NodeReport:
    """The report in ``raw``; :class:`msgspec.ValidationError` or :class:`msgspec.DecodeError` when
    it is not one (another release's shape, a stray write): the caller skips it."""
    return _decoder.decode(raw)


@functools.cache
def _client_for(redis_url: str) -> redis.Redis:
    # Short timeouts: a report or a listing waits for a hung Redis briefly, and the next one tries again.
    return redis_client(socket_timeout=2, health_check_interval=15)


def registry_client() -> redis.Redis | None:
    """The process's Redis client for the registry (one pool per process); None without REDIS_URL, where
    there is one process and no fleet to list."""
    return _client_for(settings.REDIS_URL) if settings.REDIS_URL else None
