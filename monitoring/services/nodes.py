"""Writes to the node registry (monitoring/node_reports.py)."""

from __future__ import annotations

import redis
from django.contrib.auth.models import User

from monitoring.node_reports import NodeReport, RegistryUnavailable, node_report_encode
from wedsync.models import AuditOutcome
from wedsync.redis_keys import NODE_REGISTRY, node_drain_key, node_report_key
from wedsync.services.audit import AuditAction, ClientInfo, audit_record

REGISTRY_FORGET_SECONDS = 86400  # a name that has not reported for a day leaves the index too
DRAIN_KEEP_SECONDS = 7 * 86400  # a drain asked of a node that never reported again is forgotten


def node_report_write(*, client: redis.Redis, report: NodeReport, ttl: float) -> bool:
    """Store the node's report for ``ttl`` seconds and index its name, in one round trip; whether
    an operator asks the node to drain."""
    with client.pipeline(transaction=True) as pipe:
        pipe.set(node_report_key(node=report.name), node_report_encode(report), px=int(ttl * 1000))
        pipe.zadd(NODE_REGISTRY, {report.name: report.reported_at})
        pipe.zremrangebyscore(NODE_REGISTRY, "-inf", report.reported_at - REGISTRY_FORGET_SECONDS)
        pipe.exists(node_drain_key(node=report.name))
        *_, drain_asked = pipe.execute()
    return bool(drain_asked)


class NodeNotReported(Exception):
    """No node of that name has a report that has not expired."""


def node_drain_set(*, client: redis.Redis | None, node: str, drain: bool, actor: User, client_info: ClientInfo) -> None:
    """Ask ``node`` to drain (it closes its sockets with 1001 a slice at a time, and its /readyz
    answers 503 so the load balancer sends nobody new), or to take sockets again; audited. The node
    hears it at its next report. :class:`NodeNotReported` for a node that is not in the registry
    (none is without Redis); :class:`RegistryUnavailable` when Redis does not answer."""
    if client is None:
        raise NodeNotReported(node)
    try:
        if not client.exists(node_report_key(node=node)):
            raise NodeNotReported(node)
        if drain:
            client.set(node_drain_key(node=node), b"1", ex=DRAIN_KEEP_SECONDS)
        else:
            client.delete(node_drain_key(node=node))
    except redis.RedisError as error:
        raise RegistryUnavailable("Redis, where the nodes report, did not answer.") from error
    audit_record(
        action=AuditAction.NODE_DRAIN if drain else AuditAction.NODE_RESUME,
        outcome=AuditOutcome.SUCCESS,
        actor=actor,
        target=f"node:{node}"[:200],
        client=client_info,
    )
