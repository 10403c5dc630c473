"""The protocol's operations on a socket (docs/protocol.md section 3): each checks what the frame
asks against the socket's subscriptions, calls the node hub or one service, and shapes the reply.
The consumer (realtime.consumers) decodes frames and spends their budgets before they get here."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from presence.services import PresenceRefused
from presence.state import quality_of
from realtime import protocol
from realtime.auth import SocketIdentity, SocketRefused, socket_token_refresh
from realtime.db import per_socket_db
from realtime.names import EventType, Priority, wedding_id_from_topic
from realtime.node.hub import NodeHub, SubscribeRequest
from realtime.node.replay import ConnectRead, ReplayInterrupted
from realtime.node.socket import Socket
from realtime.outbox import Outbox
from realtime.protocol import CloseCode
from realtime.selectors import SubscriptionDenied
from realtime.services.acks import event_ack
from realtime.services.events import PublishRefused
from realtime.services.sockets import observer_write_refusal_audit, socket_event_publish
from records.services import SyncRefused, SyncRequest, socket_records_sync
from wedsync.refusals import ErrorCode, Refused
from wedsync.services.audit import ClientInfo

RTT_STORE_MIN_SECONDS = 30.0


class OpSocket(Socket, Protocol):
    """What an op needs of its socket (the consumer), beyond what the node does."""

    identity: SocketIdentity
    client: ClientInfo
    hub: NodeHub
    outbox: Outbox | None
    connect_read: ConnectRead | None
    closing: bool
    rtt_quality: str | None
    rtt_stored_at: float

    def send_frame(self, frame: dict[str, Any], *, priority: Priority = ...) -> None: ...

    def close_soon(self, code: int, error: ErrorCode, message: str) -> None: ...

    def schedule_expiry(self) -> None: ...

    async def refused_for_rate(self, op: str) -> None: ...

    def emergency_raised(self) -> None: ...


_socket_event_publish = per_socket_db(socket_event_publish)  # wrapped once (realtime.db)
_socket_records_sync = per_socket_db(socket_records_sync)
_observer_write_refusal_audit = per_socket_db(observer_write_refusal_audit)


async def op_subscribe(socket: OpSocket, frame: protocol.Subscribe) -> None:
    wedding_id = wedding_id_from_topic(frame.topic)
    if wedding_id is None:
        socket.send_frame(protocol.reply_error(frame.ref, "invalid", "topic: expected wedding:<id>"))
        return
    observer = socket.identity.observer
    if observer and _observing_too_many(socket, wedding_id=wedding_id):
        most = settings.REALTIME_OBSERVE_MAX_WEDDINGS
        message = f"An observer follows at most {most} weddings at once: unsubscribe one first."
        socket.send_frame(protocol.reply_error(frame.ref, "forbidden", message))
        return
    try:
        subscribed = await socket.hub.subscribe(
            socket,
            SubscribeRequest(
                topic=frame.topic,
                wedding_id=wedding_id,
                since=frame.since,
                epoch=frame.epoch,
                min_priority=Priority.from_wire(frame.min_priority),
            ),
            client=socket.client,
            connect=socket.connect_read,
            reply=lambda data: socket.send_frame(protocol.reply_ok(frame.ref, data)),
            observer=observer,
        )
    except SubscriptionDenied as denied:
        socket.send_frame(protocol.reply_error(frame.ref, denied.code, denied.message))
        return
    try:
        async for event in subscribed.events():
            if socket.outbox is None or socket.closing:
                return
            await socket.outbox.put_paced(
                event.text,
                priority=event.priority,
                topic=frame.topic,
                seq=event.seq,
                conflate_key=event.conflate_key,
            )
    except ReplayInterrupted:
        socket.close_soon(CloseCode.SLOW, "unavailable", "The replay was interrupted: reconnect and resume.")
        return
    if not socket.closing and subscribed.current():  # not removed, re-roled or replaced meanwhile
        subscribed.go_live()


def _observing_too_many(socket: OpSocket, *, wedding_id: int) -> bool:
    if socket.hub.subscribed(socket, wedding_id=wedding_id) is not None:
        return False  # a resume of one it holds
    held = sum(1 for feed in socket.hub.feeds.values() if socket.connection_id in feed.subscriptions)
    return held >= settings.REALTIME_OBSERVE_MAX_WEDDINGS


async def _observer_refused(socket: OpSocket, *, ref: str | None, op: str, topic: str) -> bool:
    """An observer's socket only watches (decision 0029): its writes are refused and audited."""
    if not socket.identity.observer:
        return False
    message = "This socket observes: act through the admin or the API, or connect as a member."
    await _observer_write_refusal_audit(user_id=socket.user_id, op=op, topic=topic, client=socket.client)
    socket.send_frame(protocol.reply_error(ref, "forbidden", message))
    return True


async def op_unsubscribe(socket: OpSocket, frame: protocol.Unsubscribe) -> None:
    wedding_id = wedding_id_from_topic(frame.topic)
    if wedding_id is None or not socket.hub.unsubscribe(socket, wedding_id=wedding_id):
        _not_subscribed(socket, frame.ref, frame.topic, "Not subscribed to {topic}.")
        return
    socket.send_frame(protocol.reply_ok(frame.ref))


def _subscribed_wedding(socket: OpSocket, topic: str) -> int | None:
    wedding_id = wedding_id_from_topic(topic)
    if wedding_id is None or socket.hub.subscribed(socket, wedding_id=wedding_id) is None:
        return None
    return wedding_id


async def op_publish(socket: OpSocket, frame: protocol.Publish) -> None:
    if await _observer_refused(socket, ref=frame.ref, op="publish", topic=frame.topic):
        return
    wedding_id = _subscribed_wedding(socket, frame.topic)
    if wedding_id is None:
        _not_subscribed(socket, frame.ref, frame.topic, "Subscribe to {topic} first.")
        return
    try:
        published = await _socket_event_publish(
            user_id=socket.user_id,
            wedding_id=wedding_id,
            type_name=frame.type,
            data=frame.data,
            to=frame.to,
            priority_name=frame.priority,
            idempotency_key=frame.idempotency_key,
            client=socket.client,
            member_lookup=socket.hub.members.member,
        )
    except PublishRefused as refused:
        extra = {} if refused.retry_after is None else {"retry_after": refused.retry_after}
        socket.send_frame(protocol.reply_error(frame.ref, refused.code, refused.message, **extra))
        if refused.code == "rate_limited":
            await socket.refused_for_rate("publish")
        return
    socket.send_frame(protocol.reply_ok(frame.ref, {"seq": published.seq, "id": str(published.id)}))
    if frame.type == EventType.EMERGENCY_ALERT and not published.duplicate:
        # A key's replay answers with its first event, whatever that was: only a new alert counts.
        socket.emergency_raised()


async def op_ack(socket: OpSocket, frame: protocol.Ack) -> None:
    if await _observer_refused(socket, ref=frame.ref, op="ack", topic=frame.topic):
        return
    wedding_id = _subscribed_wedding(socket, frame.topic)
    if wedding_id is None:
        _not_subscribed(socket, frame.ref, frame.topic, "Not subscribed to {topic}.")
        return
    try:
        await database_sync_to_async(event_ack)(user_id=socket.user_id, wedding_id=wedding_id, seq=frame.seq)
    except Refused as refused:
        if frame.ref is not None:
            socket.send_frame(protocol.reply_error(frame.ref, refused.code, refused.message))
        return
    if frame.ref is not None:
        socket.send_frame(protocol.reply_ok(frame.ref))


async def op_auth(socket: OpSocket, frame: protocol.Auth) -> None:
    try:
        socket.identity = await database_sync_to_async(socket_token_refresh)(
            identity=socket.identity, raw=frame.token, client=socket.client
        )
    except SocketRefused as refused:
        socket.send_frame(protocol.reply_error(frame.ref, "unauthorized", refused.message))
        return
    socket.schedule_expiry()
    socket.send_frame(protocol.reply_ok(frame.ref, {"expires_at": socket.identity.expires_at}))


async def op_heartbeat(socket: OpSocket, frame: protocol.Heartbeat) -> None:
    socket.send_frame(protocol.reply_ok(frame.ref, {"server_time": protocol.iso(timezone.now())}))
    if frame.rtt is None:
        return
    # Stored only when the connection's quality class moves, and at most every
    # RTT_STORE_MIN_SECONDS: nobody needs a presence write per device per heartbeat.
    quality = quality_of(frame.rtt, 0).value
    if quality == socket.rtt_quality or time.monotonic() - socket.rtt_stored_at < RTT_STORE_MIN_SECONDS:
        return
    if await socket.hub.presence.device_rtt(socket, rtt_ms=frame.rtt):
        socket.rtt_quality, socket.rtt_stored_at = quality, time.monotonic()


async def op_presence(socket: OpSocket, frame: protocol.Presence) -> None:
    if await _observer_refused(socket, ref=frame.ref, op="presence", topic=frame.topic):
        return
    wedding_id = _subscribed_wedding(socket, frame.topic)
    if wedding_id is None:
        _not_subscribed(socket, frame.ref, frame.topic, "Subscribe to {topic} first.")
        return
    state = frame.state.change()
    if state is None:
        socket.send_frame(protocol.reply_error(frame.ref, "invalid", "state: set at least one field."))
        return
    try:
        await socket.hub.presence.state_set(
            socket, wedding_id=wedding_id, state=state, client=socket.client, user_id=socket.user_id
        )
    except PresenceRefused as refused:
        socket.send_frame(protocol.reply_error(frame.ref, refused.code, refused.message))
        return
    socket.send_frame(protocol.reply_ok(frame.ref))


async def op_sync(socket: OpSocket, frame: protocol.Sync) -> None:
    if await _observer_refused(socket, ref=frame.ref, op="sync", topic=frame.topic):
        return
    wedding_id = _subscribed_wedding(socket, frame.topic)
    if wedding_id is None:
        _not_subscribed(socket, frame.ref, frame.topic, "Subscribe to {topic} first.")
        return
    try:
        ops = frame.sync_ops()
    except protocol.FrameError as error:
        socket.send_frame(protocol.reply_error(frame.ref, error.code, error.message))
        return
    requests = [
        SyncRequest(
            kind=op.record,
            record_id=op.id,
            base_version=op.base_version,
            changes=op.changes,
            delete=op.delete,
            op_id=op.op_id,
        )
        for op in ops
    ]
    try:
        results = await _socket_records_sync(
            user_id=socket.user_id,
            wedding_id=wedding_id,
            requests=requests,
            atomic=frame.atomic,
            client=socket.client,
            member_lookup=socket.hub.members.member,
        )
    except SyncRefused as refused:
        socket.send_frame(protocol.reply_error(frame.ref, refused.code, refused.message, **refused.details))
        if refused.code == "rate_limited":
            await socket.refused_for_rate("sync")
        return
    if frame.atomic:
        socket.send_frame(protocol.reply_ok(frame.ref, {"results": [result.answer for result in results]}))
    else:
        socket.send_frame(protocol.reply_ok(frame.ref, results[0].answer))


def _not_subscribed(socket: OpSocket, ref: str | None, topic: str, message: str) -> None:
    socket.send_frame(protocol.reply_error(ref, "not_subscribed", message.format(topic=topic)))


OPS: dict[type, Callable[[OpSocket, Any], Awaitable[None]]] = {
    protocol.Subscribe: op_subscribe,
    protocol.Unsubscribe: op_unsubscribe,
    protocol.Publish: op_publish,
    protocol.Ack: op_ack,
    protocol.Auth: op_auth,
    protocol.Heartbeat: op_heartbeat,
    protocol.Presence: op_presence,
    protocol.Sync: op_sync,
}
# The ops that cannot be answered without PostgreSQL: while a node finds it away
# (realtime.db.DatabaseWatch) they are answered ``unavailable`` without waiting for it.
DATABASE_OPS: frozenset[type] = frozenset(
    {protocol.Subscribe, protocol.Publish, protocol.Ack, protocol.Auth, protocol.Sync}
)
