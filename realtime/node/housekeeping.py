"""The node's housekeeping: what repairs the lossy layer and keeps a node's state from going stale.

Once a second: find events the layer never delivered (a dropped last event, a Redis restart) from
the streams' heads, re-send unacknowledged emergencies, keep device entries and group memberships
alive, and close feeds nobody uses. Every few seconds, in a task of its own: the access check, the
safety net under the control messages.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Protocol

import structlog
from channels.db import database_sync_to_async
from django.utils import timezone

from realtime.db import DATABASE_AWAY, DatabaseWatch
from realtime.limits.devices import DEVICE_REFRESH_SECONDS
from realtime.limits.node import node_limits
from realtime.member_cache import MemberCache
from realtime.messages import ControlMessage
from realtime.names import Priority
from realtime.node.feed import WeddingFeed
from realtime.node.socket import Socket
from realtime.selectors import OBSERVER_MEMBER_ID, access_snapshot, stream_heads, unacknowledged_events
from realtime.walks import in_slices

logger = structlog.get_logger(__name__)


class Node(Protocol):
    """What the housekeeping needs of the node hub."""

    layer: Any  # the channel layer
    feeds: dict[int, WeddingFeed]
    sockets: dict[str, Socket]
    members: MemberCache
    database: DatabaseWatch

    async def join_groups(self) -> None: ...

    def feed_close(self, wedding_id: int) -> None: ...


POLL_INTERVAL = 1.0
GROUP_RENEW_SECONDS = 60.0  # Pub/Sub group subscriptions (the core layer's follow its expiry)
IDLE_FEED_SECONDS = 60.0
ACCESS_CHECK_SECONDS = 5.0
RESEND_SECONDS = 60.0  # an unacknowledged emergency or critical event is sent again this often
RESEND_WINDOW_SECONDS = 3600.0  # for this long after it was published
MAX_RESENDS = 5


async def poll_loop(hub: Node) -> None:
    """The once-a-second housekeeping; one failed round is logged and the next one runs."""
    loop = asyncio.get_running_loop()
    # Core: renew memberships before they expire. Pub/Sub has no expiry; renewing still repairs
    # a subscription that a late group_discard of the same wedding removed, at no cost otherwise.
    expiry = getattr(hub.layer, "group_expiry", None)
    refresh_every = max(expiry / 3, 30) if expiry else GROUP_RENEW_SECONDS
    next_refresh = loop.time() + refresh_every
    next_device_refresh = loop.time() + DEVICE_REFRESH_SECONDS
    next_resend = loop.time() + RESEND_SECONDS
    database_away = False
    while True:
        await asyncio.sleep(POLL_INTERVAL)
        # The database's steps and Redis's apart: a PostgreSQL restart must not let the device
        # entries and group memberships below expire unrenewed.
        try:
            if not hub.database.away:  # else each round would wait out the pool's timeout, holding a thread
                await heads_poll(hub)
                if loop.time() >= next_resend:
                    await unacknowledged_resend(hub)
                    next_resend = loop.time() + RESEND_SECONDS
        except asyncio.CancelledError:
            raise
        except DATABASE_AWAY as error:
            hub.database.failed()
            if not database_away:  # once per outage, not every second
                logger.warning("hub.poll_database_unavailable", error=repr(error))
            database_away = True
        except Exception:
            logger.exception("hub.poll_failed")
        else:
            if database_away and not hub.database.away:
                logger.info("hub.poll_database_back")
                database_away = False
        try:
            idle_feeds_close(hub, now=loop.time())
            if loop.time() >= next_device_refresh:  # device entries expire unless renewed
                await node_limits().device_refresh(connection_ids=list(hub.sockets))
                next_device_refresh = loop.time() + DEVICE_REFRESH_SECONDS
            if loop.time() >= next_refresh:  # group memberships expire unless renewed
                await hub.join_groups()
                next_refresh = loop.time() + refresh_every
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("hub.poll_failed")


async def heads_poll(hub: Node) -> None:
    """A feed behind its stream's head twice in a row lost an event in flight: it reads the log."""
    if not hub.feeds:
        return
    heads = await database_sync_to_async(stream_heads)(wedding_ids=list(hub.feeds))
    for wedding_id, head in heads.items():
        feed = hub.feeds.get(wedding_id)
        if feed is None or head <= feed.last_seq:
            continue
        if feed.suspected_head and feed.suspected_head <= head:  # ahead twice: not in flight, lost
            feed.repair_soon(upto=feed.suspected_head)
        feed.suspected_head = head


def idle_feeds_close(hub: Node, *, now: float) -> None:
    for wedding_id, feed in list(hub.feeds.items()):
        if feed.subscriptions:
            feed.idle_since = None
        elif feed.idle_since is None:
            feed.idle_since = now
        elif now - feed.idle_since > IDLE_FEED_SECONDS:
            hub.feed_close(wedding_id)


async def unacknowledged_resend(hub: Node) -> None:
    """Emergency and critical events a member has not acknowledged (``ack``) are sent again,
    marked ``"resent": true``, every RESEND_SECONDS, at most MAX_RESENDS times per socket."""
    if not hub.feeds:
        return
    now = timezone.now()
    pending = await database_sync_to_async(unacknowledged_events)(
        wedding_ids=list(hub.feeds),
        newer_than=now - timedelta(seconds=RESEND_WINDOW_SECONDS),
        older_than=now - timedelta(seconds=RESEND_SECONDS),
    )
    pending_seqs: dict[int, set[int]] = {}
    for event in pending:
        pending_seqs.setdefault(event.wedding_id, set()).add(event.seq)
    for wedding_id, wedding_feed in hub.feeds.items():  # forget what is acknowledged or too old
        keep = pending_seqs.get(wedding_id, set())
        for subscription in wedding_feed.subscriptions.values():
            if subscription.resent:
                subscription.resent = {seq: n for seq, n in subscription.resent.items() if seq in keep} or None
    for event in pending:
        feed = hub.feeds.get(event.wedding_id)
        if feed is None:
            continue
        for subscription in list(feed.subscriptions.values()):
            due = (
                subscription.confirmed
                and subscription.member_id != OBSERVER_MEMBER_ID  # observers cannot ack: not asked again
                and event.seq <= subscription.cursor  # delivered already (later ones go the live way)
                and subscription.member_id not in event.acknowledged_by
                and event.priority >= subscription.min_priority
                and (subscription.role in event.roles or subscription.member_id in event.members)
                and (subscription.resent or {}).get(event.seq, 0) < MAX_RESENDS
            )
            if due:
                resent = subscription.resent = subscription.resent or {}
                resent[event.seq] = resent.get(event.seq, 0) + 1
                subscription.socket.push_event(
                    event.text, priority=Priority(event.priority), topic=None, seq=None, conflate_key=None
                )


async def access_loop(hub: Node) -> None:
    """Every ACCESS_CHECK_SECONDS, the access check: a task of its own, since it needs only the
    database and must keep its pace when the housekeeping's Redis steps wait on a Redis that
    does not answer (the very moment revocation messages get lost)."""
    database_away = False
    while True:
        await asyncio.sleep(ACCESS_CHECK_SECONDS)
        try:
            if not hub.database.away:
                await access_reconcile(hub)
        except asyncio.CancelledError:
            raise
        except DATABASE_AWAY as error:  # nothing is judged without the database: sockets stay as they are
            hub.database.failed()
            if not database_away:
                logger.warning("hub.access_check_database_unavailable", error=repr(error))
            database_away = True
        except Exception:
            logger.exception("hub.access_check_failed")
        else:
            if database_away and not hub.database.away:
                logger.info("hub.access_check_database_back")
                database_away = False


async def access_reconcile(hub: Node) -> None:
    """The safety net under the control messages (which ride the same lossy layer): compare this
    node's subscriptions and sockets with the database's roles, token generations, accounts and
    sessions, and act on any change a lost message did not bring."""
    # Judge only the subscriptions that existed before the read: one made meanwhile was checked
    # against the database when it was made, and one still waiting for its check gets it there.
    checked = [
        (feed, connection_id, subscription)
        for feed in hub.feeds.values()
        for connection_id, subscription in feed.subscriptions.items()
        if subscription.confirmed
    ]
    # Likewise the sockets: one that connects during the read was checked at its connect, and
    # its session (not among those read) must not be taken for one that ended.
    sockets = list(hub.sockets.values())
    # And the publishers' memberships the node's cache holds (realtime.member_cache), read likewise.
    held = hub.members.held()
    if not checked and not sockets and not held:
        return
    snapshot = await database_sync_to_async(access_snapshot)(
        member_ids=sorted(
            {s.member_id for _f, _c, s in checked if s.member_id != OBSERVER_MEMBER_ID}
            | {entry.member_id for entry in held}
        ),
        user_ids=sorted({socket.user_id for socket in sockets} | {entry.user_id for entry in held}),
        session_keys=sorted({key for socket in sockets if (key := socket.session_key) is not None}),
        observed=sorted(
            {(s.socket.user_id, f.wedding_id) for f, _c, s in checked if s.member_id == OBSERVER_MEMBER_ID}
        ),
    )
    members = snapshot.members
    hub.members.forget_stale(
        [
            entry
            for entry in held
            if members.get(entry.member_id) != (entry.role, entry.wedding_id, entry.user_id, True)
            or entry.user_id in snapshot.inactive_users
        ]
    )
    async for part in in_slices(checked):
        for feed, connection_id, subscription in part:
            if feed.subscriptions.get(connection_id) is not subscription:
                continue  # gone or replaced since the read
            if subscription.member_id == OBSERVER_MEMBER_ID:
                if (subscription.socket.user_id, feed.wedding_id) not in snapshot.overseen:
                    subscription.socket.on_control(
                        ControlMessage(kind="member_changed", wedding=feed.wedding_id, reason="oversight_ended")
                    )
                continue
            state = members.get(subscription.member_id)
            expected = (subscription.role, feed.wedding_id, subscription.socket.user_id, True)
            if state != expected:
                reason = "removed" if state is None else "deactivated" if not state[3] else "role_changed"
                # Moves the node's membership generation too: no connect's read of it is trusted now.
                user_id = subscription.socket.user_id
                hub.members.forget(user_id=user_id, wedding_id=feed.wedding_id, source="access_check")
                subscription.socket.on_control(
                    ControlMessage(kind="member_changed", wedding=feed.wedding_id, reason=reason)
                )
    async for sockets_part in in_slices(sockets):
        for socket in sockets_part:
            if hub.sockets.get(socket.connection_id) is not socket:
                continue  # gone since the read
            generation = snapshot.generations.get(socket.user_id, 0)
            if socket.user_id in snapshot.inactive_users:
                socket.on_control(ControlMessage(kind="access_ended", reason="deactivated"))
            elif generation > socket.token_generation:
                socket.on_control(ControlMessage(kind="tokens_revoked", generation=generation))
            elif socket.session_key is not None and socket.session_key not in snapshot.live_sessions:
                socket.on_control(ControlMessage(kind="access_ended", reason="session_ended"))
