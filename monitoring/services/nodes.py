"""Writes to the node registry (monitoring/node_reports.py)."""

from __future__ import annotations

import redis

from monitoring.node_reports import NodeReport, node_report_encode
from wedsync.redis_keys import NODE_REGISTRY, node_report_key

REGISTRY_FORGET_SECONDS = 86400  # a name that has not reported for a day leaves the index too


def node_report_write(*, client: redis.Redis, report: NodeReport, ttl: float) -> None:
    """Store the node's report for ``ttl`` seconds and index its name, in one round trip."""
    with client.pipeline(transaction=True) as pipe:
        pipe.set(node_report_key(node=report.name), node_report_encode(report), px=int(ttl * 1000))
        pipe.zadd(NODE_REGISTRY, {report.name: report.reported_at})
        pipe.zremrangebyscore(NODE_REGISTRY, "-inf", report.reported_at - REGISTRY_FORGET_SECONDS)
        pipe.execute()
