"""Who a bearer token's socket is, as this node read it at the token's last connect (decision 0046).

After a blip every socket of a venue comes back at once, to the same node (the balancer hashes by
user), with the token it came with seconds before. Each connect used to verify the token and read
the user, the token generation and the memberships in a thread hop: the largest cost of a resume.
The node now keeps what a token's connect read, and a connect with that token answers from it while
the read is as fresh as the node's member cache would hold it: less than
``REALTIME_MEMBER_CACHE_SECONDS`` old and no member change, revocation or access-check finding
heard since (the node's membership generation has not moved). The token's expiry and the Origin are
checked again at every connect; anything else (a ticket, a session, an observer) takes the hop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from cachetools import TTLCache

from realtime.auth import socket_origin_allowed
from realtime.services.sockets import SocketOpened
from wedsync.models import AuditOutcome
from wedsync.services.audit import AuditAction, ClientInfo, audit_entry_build


@dataclass(frozen=True, slots=True)
class KnownConnect:
    opened: SocketOpened
    generation: int  # the node's membership generation before the read
    at: float  # monotonic, before the read


class KnownConnects:
    """What bearer-token connects read, by token, for this node's event loop only."""

    def __init__(self, *, seconds: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._known: TTLCache[str, KnownConnect] | None = (
            TTLCache(maxsize=size, ttl=seconds, timer=clock) if seconds > 0 and size > 0 else None
        )

    def keep(self, token: str, *, opened: SocketOpened, generation: int, at: float) -> None:
        if self._known is not None and opened.identity.method == "bearer" and not opened.identity.observer:
            self._known[token] = KnownConnect(opened=opened, generation=generation, at=at)

    def opened(
        self,
        token: str | None,
        *,
        generation: int,
        headers: dict[str, str],
        scheme: str,
        query_string: str,
        client: ClientInfo,
    ) -> KnownConnect | None:
        """What the token's last connect read, with a new audit entry for this connect; None when
        the connect must read afresh (no token, nothing kept, a change heard since, too old, the
        token expired, an observer's connect, or an Origin the hop would refuse and audit)."""
        if self._known is None or token is None or parse_qs(query_string).get("observe") == ["1"]:
            return None
        with self._known.timer:  # one clock reading for "is it there" and "is it fresh"
            known = self._known.get(token)
        if known is None or known.generation != generation or self._clock() - known.at >= self._seconds:
            return None
        identity = known.opened.identity
        if identity.expires_at is not None and identity.expires_at <= time.time():
            return None
        if not socket_origin_allowed(headers=headers, scheme=scheme):
            return None
        entry = audit_entry_build(
            action=AuditAction.SOCKET_CONNECT,
            outcome=AuditOutcome.SUCCESS,
            actor_label=known.opened.audit_entry.actor_label,
            client=client,
            details={"method": identity.method, "origin": headers.get("origin", "")[:200]},
        )
        entry.actor_id = identity.user_id
        opened = SocketOpened(
            identity=identity, memberships=known.opened.memberships, heartbeat=known.opened.heartbeat, audit_entry=entry
        )
        return KnownConnect(opened=opened, generation=known.generation, at=known.at)
