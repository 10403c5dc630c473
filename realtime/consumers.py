"""The ``/ws/v1/`` socket: parse and check each frame, call one service or the hub, shape the reply.

Sockets never join channel-layer groups themselves: the node hub receives each event once per node
and hands it to :meth:`RealtimeConsumer.push_event` (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

import msgspec
import structlog
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from presence.services import (
    PresenceRefused,
    presence_device_rtt,
    presence_state_set,
)
from presence.state import DevicePresence, StateChange, quality_of
from presence.vocabulary import PresenceStatus
from realtime import protocol
from realtime.audit import node_audit
from realtime.auth import PROTOCOL_NAME, SocketIdentity, SocketRefused, socket_token_refresh
from realtime.daphne_support import connection_open, control_frames_heard, frame_writer_for, write_gate_for
from realtime.db import per_socket_db
from realtime.hub import NodeHub, Subscription, node_hub
from realtime.limits.addresses import AddressAdmission
from realtime.limits.counting import RateDecision
from realtime.limits.devices import device_limit_for
from realtime.limits.node import node_limits, socket_address_admit, socket_address_release
from realtime.limits.ops import OP_WINDOW_SECONDS
from realtime.names import Priority, wedding_id_from_topic, wedding_topic
from realtime.outbox import Outbox, conflation_key
from realtime.selectors import MembershipView, SubscriptionDenied, events_replay_page
from realtime.services.acks import event_ack
from realtime.services.events import PublishRefused
from realtime.services.sockets import (
    device_limit_close_audit,
    socket_abuse_audit,
    socket_event_publish,
    socket_open,
    socket_subscribe_check,
)
from wedsync.refusals import Refused
from wedsync.services.audit import ClientInfo

logger = structlog.get_logger(__name__)

CONTROL_PRIORITY = Priority.EMERGENCY  # replies and notices are never queued behind events
VIOLATION_LIMIT = 10  # protocol violations per minute before 4400
BINARY_CLOSE, TOO_LARGE_CLOSE, VIOLATIONS_CLOSE = 1003, 1009, 4400
UNAUTHORIZED_CLOSE, SLOW_CLOSE, DEVICES_CLOSE = 4401, 4008, 4029
TRY_AGAIN_CLOSE = 1013  # RFC 6455 "try again later": this node cannot serve sockets yet
TRY_AGAIN_SECONDS = 2.0  # the retry_after told with it
HUB_READY_WAIT_SECONDS = 5.0  # how long a connect waits for the node's first hub start
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
RTT_STORE_MIN_SECONDS = 30.0
ACK_SLACK = 50  # acks a socket may send beyond the events it was asked to ack
REFUSAL_GRACE_SECONDS = 2.0
# The ops with a budget of their own (REALTIME_OP_LIMITS); publish has its per-role rate limit.
_BUDGETED_OPS: dict[type, str] = {
    protocol.Subscribe: "subscribe",
    protocol.Unsubscribe: "unsubscribe",
    protocol.Presence: "presence",
    protocol.Auth: "auth",
    protocol.Heartbeat: "heartbeat",
}

# The socket's own thread hops, each wrapped once (realtime.db).
_socket_open = per_socket_db(socket_open)
_socket_subscribe_check = per_socket_db(socket_subscribe_check)
_socket_event_publish = per_socket_db(socket_event_publish)
_presence_state_set = per_socket_db(presence_state_set)
_device_limit_close_audit = per_socket_db(device_limit_close_audit)
_socket_abuse_audit = per_socket_db(socket_abuse_audit)
_events_replay_page = per_socket_db(events_replay_page)


class RealtimeConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    # No per-socket channel: fan-out reaches sockets through the node hub, not the layer.
    channel_layer_alias = "__sockets_do_not_use_the_layer__"

    connection_id: str
    user_id: int
    identity: SocketIdentity
    connect_weddings: frozenset[int] = frozenset()  # the user's weddings when the socket connected
    hub: NodeHub
    outbox: Outbox | None = None
    _expiry: asyncio.TimerHandle | None = None
    _closing = False
    _released = False
    _violations: tuple[float, ...] = ()
    _rate_refusals: tuple[float, ...] = ()  # when ops were answered rate_limited, this last minute
    _rate_refused_since: dict[str, float] | None = None  # op -> when its run of refusals began (made at the first)
    _acks = 0  # acks received, and acks asked for (emergency and critical events sent)
    _acks_owed = 0
    _subscribe_floor = 0  # the subscribe budget this user's resume needs (its weddings x devices x 2)
    _heartbeat_window = -1  # the minute (monotonic) its heartbeats are counted in, and how many
    _heartbeats = 0
    _rtt_stored_at = -RTT_STORE_MIN_SECONDS  # when a heartbeat's rtt last reached presence (monotonic)
    heartbeat_interval: int = 30  # seconds, as told in the welcome frame
    client_device: str = ""  # the client's stable name for this device (``?device=``), if any
    _heard = 0.0  # when the client last sent a frame (epoch seconds)
    _control_heard: Callable[[], float] = staticmethod(lambda: 0.0)  # ... or a ping or pong
    _reconnects: int = 0  # this device's connects in the last hour, minus this one
    _address: AddressAdmission | None = None  # this socket's place among its address's open sockets
    _rtt_quality: str | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels' dispatch() hops to a thread before every message to close stale database
        # connections; this consumer reaches the ORM only through database_sync_to_async, which
        # does that itself, so the hop is skipped (PERFORMANCE-NOTES: 2.5-4.5x faster).
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connect ------------------------------------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        if not connection_open(self.base_send):
            return  # gave up on while it waited its turn; its disconnect message follows
        headers = {name.decode("latin1").lower(): value.decode("latin1") for name, value in self.scope["headers"]}
        subprotocols: list[str] = list(self.scope.get("subprotocols") or [])
        self.client = ClientInfo.from_scope(self.scope)
        self._address = await socket_address_admit(client=self.client)
        if not self._address.allowed:  # too many sockets from this address: try again later
            await self._refuse(
                TRY_AGAIN_CLOSE,
                protocol.error_frame(
                    "rate_limited",
                    "Too many connections from your network: try again later.",
                    retry_after=self._address.retry_after,
                ),
            )
            return
        hub = node_hub()
        if not await hub.ready(within=HUB_READY_WAIT_SECONDS):
            # Nothing behind the socket yet (the channel layer's Redis is away): say when to come
            # back rather than accept a socket that would never hear an event.
            await self._refuse(
                TRY_AGAIN_CLOSE,
                protocol.error_frame(
                    "unavailable", "This node is not ready: try again later.", retry_after=TRY_AGAIN_SECONDS
                ),
            )
            return
        try:
            opened = await _socket_open(
                headers=headers,
                subprotocols=subprotocols,
                query_string=self.scope.get("query_string", b"").decode("latin1"),
                scheme=self.scope.get("scheme", "ws"),
                client=self.client,
            )
        except SocketRefused as refused:
            code: protocol.ErrorCode = "forbidden" if refused.close_code == 4403 else "unauthorized"
            await self._refuse(refused.close_code, protocol.error_frame(code, refused.message))
            return
        if not connection_open(self.base_send):
            return  # gone while it was authenticated: never accepted, so nothing to audit
        await node_audit().write(opened.audit_entry)
        self.identity, memberships = opened.identity, opened.memberships
        self.user_id = self.identity.user_id
        self.connection_id = uuid.uuid4().hex
        self.connect_weddings = frozenset(m.wedding_id for m in memberships)
        self.heartbeat_interval = opened.heartbeat
        self.client_device = _device_name(self.scope.get("query_string", b"").decode("latin1"))
        self._heard = time.time()
        self._control_heard = control_frames_heard(self.base_send)
        await self.accept(subprotocol=PROTOCOL_NAME if PROTOCOL_NAME in subprotocols else None)
        self.outbox = Outbox(
            send_text=self._send_text,
            gate=write_gate_for(self.base_send, send_buffer=settings.REALTIME_SOCKET_SEND_BUFFER),
            write_frame=writer.write if (writer := frame_writer_for(self.base_send)) is not None else None,
            max_frames=settings.REALTIME_OUTBOX_MAX_FRAMES,
            max_bytes=settings.REALTIME_OUTBOX_MAX_BYTES,
            on_overflow=self.too_slow,
        )
        self.hub = hub
        self.hub.register(self)
        if not await self._within_device_limit([m.role for m in memberships]):
            return
        self._send_frame(
            {
                "op": "welcome",
                "session": self.connection_id,
                "user": {"id": self.user_id, "name": self.identity.user_name},
                "memberships": [{"wedding": m.wedding_id, "member": m.member_id, "role": m.role} for m in memberships],
                "heartbeat_interval": opened.heartbeat,
                "max_frame": settings.REALTIME_MAX_FRAME,
                "server_time": protocol.iso(timezone.now()),
                "node": settings.REALTIME_NODE_NAME,
            }
        )
        self._schedule_expiry()

    async def _refuse(self, close_code: int, error: dict[str, Any]) -> None:
        """Accept, explain and close: browsers can read close codes, not handshake statuses."""
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept(subprotocol=PROTOCOL_NAME if PROTOCOL_NAME in subprotocols else None)
        await self.send(text_data=protocol.encode(error))
        await self.close(code=close_code)

    async def _within_device_limit(self, roles: list[str]) -> bool:
        """Count this device (and its reconnects, for presence); close what the device policy says
        must go (4029)."""
        # A stable key across processes (``hash()`` is salted per process).
        device_key = self.client_device or f"ua:{zlib.crc32(self.client.user_agent.encode()):x}"
        admission = await node_limits().device_admit(
            user_id=self.user_id, connection_id=self.connection_id, roles=roles, device_key=device_key
        )
        self._reconnects = admission.reconnects
        self._subscribe_floor = 2 * len(self.connect_weddings) * device_limit_for(roles)
        if admission.close:
            await _device_limit_close_audit(
                user_id=self.user_id, connection_id=self.connection_id, closed=admission.close, client=self.client
            )
        for connection_id in admission.close:
            if connection_id == self.connection_id:
                self._close_soon(DEVICES_CLOSE, "forbidden", "Too many devices: close one and try again.")
                return False
            self.hub.control_broadcast({"kind": "close_connection", "user": self.user_id, "connection": connection_id})
        return True

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    def _send_frame(self, frame: dict[str, Any], *, priority: Priority = CONTROL_PRIORITY) -> None:
        if self.outbox is not None:
            self.outbox.put(protocol.encode(frame), priority=priority)

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.identity.expires_at is not None:
            delay = max(self.identity.expires_at - time.time(), 0)
            self._expiry = asyncio.get_running_loop().call_later(
                delay, lambda: self._close_soon(UNAUTHORIZED_CLOSE, "unauthorized", "The token expired.")
            )

    def _close_soon(self, code: int, error: protocol.ErrorCode, message: str) -> None:
        """Close from a synchronous callback: say why, then close once queued frames are written."""
        if self._closing:
            return
        self._closing = True
        asyncio.get_running_loop().create_task(self._close_with(code, error, message))

    async def _close_with(self, code: int, error: protocol.ErrorCode, message: str) -> None:
        if self.outbox is not None:
            if code != SLOW_CLOSE:  # what was answered before still goes out; a slow reader gets nothing more
                await self.outbox.drain(within=1.0)
            self.outbox.close()
        await self.send(text_data=protocol.encode(protocol.error_frame(error, message)))
        await self.close(code=code)

    def heard_at(self) -> float:
        return max(self._heard, self._control_heard())

    @property
    def token_generation(self) -> int:
        return self.identity.generation

    @property
    def session_key(self) -> str | None:
        return self.identity.session_key

    def too_slow(self) -> None:
        self._close_soon(SLOW_CLOSE, "unavailable", "Too slow to keep up: reconnect and resume with since.")

    # --- hub callbacks ------------------------------------------------------------------------------

    def push_event(
        self,
        text: str,
        *,
        priority: Priority,
        topic: str | None,
        seq: int | None,
        conflate_key: str | None,
        framed: bytes | None = None,
    ) -> None:
        if self.outbox is not None:
            if priority.must_be_acknowledged:  # each one is an ack the client is asked for
                self._acks_owed += 1
            self.outbox.put(text, priority=priority, topic=topic, seq=seq, conflate_key=conflate_key, framed=framed)

    def on_control(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "close_connection" and message.get("connection") == self.connection_id:
            self._close_soon(DEVICES_CLOSE, "forbidden", "Signed in on too many devices: this, the oldest, closes.")
        elif kind == "tokens_revoked" and message.get("generation", 0) > self.identity.generation:
            self._close_soon(UNAUTHORIZED_CLOSE, "unauthorized", "Your access was revoked: log in again.")
        elif kind == "access_ended":
            why = "Your account was deactivated." if message.get("reason") == "deactivated" else "Your session ended."
            self._close_soon(UNAUTHORIZED_CLOSE, "unauthorized", f"{why} Log in again.")
        elif kind == "member_changed":
            wedding_id = int(message["wedding"])
            if self.hub.unsubscribe(self, wedding_id=wedding_id):
                self._send_frame(
                    {"op": "unsubscribed", "topic": wedding_topic(wedding_id), "reason": message.get("reason", "")}
                )

    # --- receive ------------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closing or self.outbox is None:
            return
        self._heard = time.time()
        if text_data is None:
            self._closing = True  # first: a hub callback during the drain must not start a second close
            await self._close_with(BINARY_CLOSE, "invalid", "Binary frames are not part of the protocol.")
            return
        if len(text_data.encode("utf-8", "surrogatepass")) > settings.REALTIME_MAX_FRAME:
            # daphne refuses these from the frame header; this covers other servers and tests.
            self._closing = True
            await self._close_with(
                TOO_LARGE_CLOSE, "too_large", f"Frames are limited to {settings.REALTIME_MAX_FRAME} bytes."
            )
            return
        try:
            frame = protocol.frame_decode(text_data)
        except protocol.FrameError as exc:
            self._violation()
            self._send_frame(protocol.reply_error(exc.ref, exc.code, exc.message))
            return
        over = await self._over_budget(frame)
        if over is not None:
            op, retry_after = over
            ref = getattr(frame, "ref", None)
            if ref is not None or op != "ack":  # an ack is answered only when it asks to be
                message = f"Too many {op} requests: wait and retry."
                self._send_frame(protocol.reply_error(ref, "rate_limited", message, retry_after=retry_after))
            await self._refused_for_rate(op)
            return
        handler = self._handlers.get(type(frame))
        try:
            await handler(self, frame)  # type: ignore[misc]
        except Exception:
            logger.exception("socket.handler_failed", op=type(frame).__name__, connection=self.connection_id)
            self._send_frame(
                protocol.reply_error(getattr(frame, "ref", None), "server_error", "Something went wrong on our side.")
            )

    async def _over_budget(self, frame: protocol.ClientFrame) -> tuple[str, float] | None:
        """(op, retry_after) when the frame's op is over its budget (REALTIME_OP_LIMITS), else None:
        per user across nodes, but heartbeats per socket here (one Redis call per heartbeat of
        every socket would cost a busy node more than the heartbeats themselves)."""
        if isinstance(frame, protocol.Ack):
            # Acks are asked for, one per emergency or critical event (re-sends included) this
            # socket was sent: a budget per user would refuse the very acks an emergency flood
            # demands, so each socket may ack what it was sent, and a little more.
            self._acks += 1
            if self._acks <= self._acks_owed + ACK_SLACK:
                self._refusals_end("ack")
                return None
            return "ack", float(OP_WINDOW_SECONDS)
        op = _BUDGETED_OPS.get(type(frame))
        per_minute = settings.REALTIME_OP_LIMITS.get(op, 0) if op is not None else 0
        if op is None or not per_minute:
            return None
        if op == "heartbeat":
            window = int(time.monotonic() // OP_WINDOW_SECONDS)
            if window != self._heartbeat_window:
                self._heartbeat_window, self._heartbeats = window, 0
            self._heartbeats += 1
            decision = RateDecision(
                allowed=self._heartbeats <= per_minute,
                retry_after=round(max((window + 1) * OP_WINDOW_SECONDS - time.monotonic(), 0.1), 1),
            )
        else:
            if op == "subscribe":  # a resume resubscribes every wedding of every device: room for two
                per_minute = max(per_minute, self._subscribe_floor)
            decision = await node_limits().op_spend(user_id=self.user_id, op=op, per_minute=per_minute)
        if decision.allowed:
            self._refusals_end(op)
            return None
        return op, decision.retry_after

    def _refusals_end(self, op: str) -> None:
        if self._rate_refused_since is not None:
            self._rate_refused_since.pop(op, None)

    async def _refused_for_rate(self, op: str) -> None:
        """Count a rate_limited answer; REALTIME_ABUSE_REFUSALS of them within a minute close the
        socket 4029, audited: a client that ignores retry_after is not one to keep serving."""
        now = time.monotonic()
        # Frames already on their way when the first refusal went out are not the client ignoring
        # it: refusals count from REFUSAL_GRACE_SECONDS after the first of a run of them.
        if self._rate_refused_since is None:
            self._rate_refused_since = {}
        if now - self._rate_refused_since.setdefault(op, now) < REFUSAL_GRACE_SECONDS:
            return
        self._rate_refusals = (*(moment for moment in self._rate_refusals if now - moment < 60), now)
        if len(self._rate_refusals) < settings.REALTIME_ABUSE_REFUSALS or self._closing:
            return
        self._closing = True
        try:
            await _socket_abuse_audit(
                user_id=self.user_id,
                connection_id=self.connection_id,
                op=op,
                refusals=len(self._rate_refusals),
                client=self.client,
            )
        finally:
            await self._close_with(DEVICES_CLOSE, "rate_limited", "Too many requests over the limits: closing.")

    def _violation(self) -> None:
        now = time.monotonic()
        self._violations = (*(moment for moment in self._violations if now - moment < 60), now)
        if len(self._violations) > VIOLATION_LIMIT:
            self._close_soon(VIOLATIONS_CLOSE, "invalid", "Too many invalid frames.")

    # --- operations ---------------------------------------------------------------------------------

    async def _subscribe(self, frame: protocol.Subscribe) -> None:
        wedding_id = wedding_id_from_topic(frame.topic)
        if wedding_id is None:
            self._send_frame(protocol.reply_error(frame.ref, "invalid", "topic: expected wedding:<id>"))
            return
        access: dict[str, Any] = {"user_id": self.user_id, "wedding_id": wedding_id, "client": self.client}
        check = functools.partial(socket_subscribe_check, **access)
        options: dict[str, Any] = {
            "topic": frame.topic,
            "wedding_id": wedding_id,
            "since": frame.since,
            "epoch": frame.epoch,
            "min_priority": Priority.from_wire(frame.min_priority),
        }
        try:
            if wedding_id in self.connect_weddings and self.hub.subscribed(self, wedding_id=wedding_id) is None:
                # The usual case: check access and read the replay in one hop.
                subscribed = await self.hub.subscribe(self, check=check, **options)
            else:  # check first: no feed for a stranger's wedding, and a refusal keeps what was there
                checked = await _socket_subscribe_check(**access)
                subscribed = await self.hub.subscribe(self, membership=checked, **options)
        except SubscriptionDenied as denied:
            self._send_frame(protocol.reply_error(frame.ref, denied.code, denied.message))
            return
        membership, replay, subscription = subscribed
        device = self._presence_device(membership)
        snapshot = await self.hub.presence_join(device)
        # Present even if the store was away: its heartbeat joins it again, its close tells the leave.
        subscription.present, subscription.device = True, device
        if self.hub.subscribed(self, wedding_id=membership.wedding_id) is not subscription:
            # Access changed (or another subscribe replaced this one) while the replay was read.
            self.hub.presence_leave(subscription, wedding_id=membership.wedding_id)
            self._send_frame(protocol.reply_error(frame.ref, "forbidden", "Your access changed: subscribe again."))
            return
        self._send_frame(
            protocol.reply_ok(
                frame.ref,
                {
                    "seq": replay.upto,
                    "epoch": replay.epoch,
                    "recovered": replay.recovered,
                    "presence": {} if snapshot is None else snapshot.wire,
                },
            )
        )
        subscription.presence_live(versions={} if snapshot is None else snapshot.versions)
        if snapshot is not None:
            self.hub.presence_seed(wedding_id=membership.wedding_id, snapshot=snapshot)
        page = replay.first
        while True:
            for event, seq in zip(page.frames, page.seqs, strict=True):
                if self.outbox is None or self._closing:
                    return
                if self.hub.subscribed(self, wedding_id=membership.wedding_id) is not subscription:
                    return  # removed, its role changed, or replaced while the replay flowed
                await self.outbox.put_paced(
                    protocol.encode(event),
                    priority=Priority.from_wire(event["priority"]),
                    topic=frame.topic,
                    seq=seq,
                    conflate_key=conflation_key(event),
                )
            if page.next_after is None:
                break
            if self._closing:
                return
            try:  # a page at a time, so a 5,000-event replay never sits in memory whole
                page = await _events_replay_page(
                    wedding_id=membership.wedding_id,
                    member_id=membership.member_id,
                    role=membership.role,
                    after=page.next_after,
                    upto=replay.upto,
                    min_priority=options["min_priority"],
                )
            except Exception:  # the database went away mid-replay: the client resumes from its last seq
                logger.exception("socket.replay_page_failed", connection=self.connection_id)
                self._close_soon(SLOW_CLOSE, "unavailable", "The replay was interrupted: reconnect and resume.")
                return
        subscription.go_live(upto=replay.upto)

    def _presence_device(self, membership: MembershipView) -> DevicePresence:
        return DevicePresence(
            wedding_id=membership.wedding_id,
            member_id=membership.member_id,
            role=membership.role,
            device=self.connection_id,
            node=settings.REALTIME_NODE_NAME,
            heartbeat_interval=self.heartbeat_interval,
            last_seen=self.heard_at(),
            client_device=self.client_device,
            reconnects=self._reconnects,
        )

    async def _unsubscribe(self, frame: protocol.Unsubscribe) -> None:
        wedding_id = wedding_id_from_topic(frame.topic)
        if wedding_id is None or not self.hub.unsubscribe(self, wedding_id=wedding_id):
            self._send_frame(protocol.reply_error(frame.ref, "not_subscribed", f"Not subscribed to {frame.topic}."))
            return
        self._send_frame(protocol.reply_ok(frame.ref))

    async def _publish(self, frame: protocol.Publish) -> None:
        wedding_id = wedding_id_from_topic(frame.topic)
        subscription = None if wedding_id is None else self.hub.subscribed(self, wedding_id=wedding_id)
        if wedding_id is None or subscription is None:
            self._send_frame(protocol.reply_error(frame.ref, "not_subscribed", f"Subscribe to {frame.topic} first."))
            return
        try:
            published = await _socket_event_publish(
                user_id=self.user_id,
                wedding_id=wedding_id,
                type_name=frame.type,
                data=frame.data,
                to=frame.to,
                priority_name=frame.priority,
                idempotency_key=frame.idempotency_key,
                client=self.client,
            )
        except PublishRefused as refused:
            extra = {} if refused.retry_after is None else {"retry_after": refused.retry_after}
            self._send_frame(protocol.reply_error(frame.ref, refused.code, refused.message, **extra))
            if refused.code == "rate_limited":
                await self._refused_for_rate("publish")
            return
        self._send_frame(protocol.reply_ok(frame.ref, {"seq": published.seq, "id": str(published.id)}))

    async def _ack(self, frame: protocol.Ack) -> None:
        wedding_id = wedding_id_from_topic(frame.topic)
        if wedding_id is None or self.hub.subscribed(self, wedding_id=wedding_id) is None:
            self._send_frame(protocol.reply_error(frame.ref, "not_subscribed", f"Not subscribed to {frame.topic}."))
            return
        try:
            await database_sync_to_async(event_ack)(user_id=self.user_id, wedding_id=wedding_id, seq=frame.seq)
        except Refused as refused:
            if frame.ref is not None:
                self._send_frame(protocol.reply_error(frame.ref, refused.code, refused.message))
            return
        if frame.ref is not None:
            self._send_frame(protocol.reply_ok(frame.ref))

    async def _auth(self, frame: protocol.Auth) -> None:
        try:
            self.identity = await database_sync_to_async(socket_token_refresh)(
                identity=self.identity, raw=frame.token, client=self.client
            )
        except SocketRefused as refused:
            self._send_frame(protocol.reply_error(frame.ref, "unauthorized", refused.message))
            return
        self._schedule_expiry()
        self._send_frame(protocol.reply_ok(frame.ref, {"expires_at": self.identity.expires_at}))

    async def _heartbeat(self, frame: protocol.Heartbeat) -> None:
        self._send_frame(protocol.reply_ok(frame.ref, {"server_time": protocol.iso(timezone.now())}))
        if frame.rtt is None:
            return
        # Stored only when the connection's quality class moves: a round trip per heartbeat would
        # be a presence write per device every 10 s for nothing anyone needs to see.
        quality = quality_of(frame.rtt, 0).value
        if quality == self._rtt_quality or time.monotonic() - self._rtt_stored_at < RTT_STORE_MIN_SECONDS:
            return  # an rtt that swings across a class boundary is stored at most this often
        for wedding_id, subscription in self._present_subscriptions():
            try:
                await sync_to_async(presence_device_rtt, thread_sensitive=False)(
                    wedding_id=wedding_id,
                    member_id=subscription.member_id,
                    device=self.connection_id,
                    rtt_ms=frame.rtt,
                    tell=self.hub.presence_tell,
                )
            except Exception:  # Redis away: the heartbeat was answered; the next one tries again
                logger.warning("socket.presence_rtt_failed", connection=self.connection_id)
                return
            if subscription.device is not None:
                subscription.device = replace(subscription.device, rtt_ms=frame.rtt)
        self._rtt_quality, self._rtt_stored_at = quality, time.monotonic()

    def _present_subscriptions(self) -> list[tuple[int, Subscription]]:
        return [
            (wedding_id, subscription)
            for wedding_id in list(self.hub.feeds)
            if (subscription := self.hub.subscribed(self, wedding_id=wedding_id)) is not None and subscription.present
        ]

    async def _presence(self, frame: protocol.Presence) -> None:
        wedding_id = wedding_id_from_topic(frame.topic)
        subscription = None if wedding_id is None else self.hub.subscribed(self, wedding_id=wedding_id)
        if wedding_id is None or subscription is None:
            self._send_frame(protocol.reply_error(frame.ref, "not_subscribed", f"Subscribe to {frame.topic} first."))
            return
        state = _presence_input(frame.state)
        if state is None:
            self._send_frame(protocol.reply_error(frame.ref, "invalid", "state: set at least one field."))
            return
        if not subscription.present:
            self._send_frame(
                protocol.reply_error(frame.ref, "unavailable", "Presence is unavailable: subscribe again.")
            )
            return
        try:
            await _presence_state_set(
                wedding_id=wedding_id,
                member_id=subscription.member_id,
                role=subscription.role,
                user_id=self.user_id,
                device=self.connection_id,
                state=state,
                client=self.client,
                tell=self.hub.presence_tell,
            )
        except PresenceRefused as refused:
            self._send_frame(protocol.reply_error(frame.ref, refused.code, refused.message))
            return
        if subscription.device is not None:  # what a rejoin after a long silence restores
            subscription.device = state.apply(subscription.device, now=time.time())
        self._send_frame(protocol.reply_ok(frame.ref))

    async def _not_yet(self, frame: protocol.Sync) -> None:
        op = type(frame).__name__.lower()
        self._send_frame(protocol.reply_error(frame.ref, "unavailable", f"{op} is not available on this server yet."))

    _handlers: dict[type, Callable[[RealtimeConsumer, Any], Awaitable[None]]] = {
        protocol.Subscribe: _subscribe,
        protocol.Unsubscribe: _unsubscribe,
        protocol.Publish: _publish,
        protocol.Ack: _ack,
        protocol.Auth: _auth,
        protocol.Heartbeat: _heartbeat,
        protocol.Presence: _presence,
        protocol.Sync: _not_yet,
    }

    # --- disconnect ---------------------------------------------------------------------------------

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self._release()
        raise StopConsumer

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        # One task per socket: channels' await_many_dispatch would keep a receive task and an
        # asyncio.wait per idle socket (~1.5 KB each) to also listen on a layer channel, which
        # these sockets do not have.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        # However the consumer ends (disconnect, an error in connect, daphne cancelling it), the
        # socket leaves the hub and frees its device place.
        try:
            with contextlib.suppress(StopConsumer):
                while True:
                    await self.dispatch(await receive())
        finally:
            await self._release()

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._expiry is not None:
            self._expiry.cancel()
        hub: NodeHub | None = getattr(self, "hub", None)
        if self.outbox is not None and hub is not None:
            self.outbox.close()
            hub.unregister(self)
            try:
                await node_limits().device_disconnect(user_id=self.user_id, connection_id=self.connection_id)
            except Exception:  # Redis away: the entry expires by itself within a minute
                logger.warning("socket.device_disconnect_failed", connection=self.connection_id)
        await socket_address_release(self._address)


def _device_name(query_string: str) -> str:
    """The ``device`` query parameter, when it is a plausible device name (else none)."""
    values = parse_qs(query_string).get("device", [])
    return values[0] if values and _DEVICE_NAME.match(values[0]) else ""


def _presence_input(state: protocol.PresenceState) -> StateChange | None:
    """The fields a ``presence`` op set, and those it cleared with null; None when it set none."""
    given = {name: getattr(state, name) for name in state.__struct_fields__}
    given = {name: value for name, value in given.items() if value is not msgspec.UNSET}
    if not given:
        return None
    cleared = frozenset(name for name, value in given.items() if value is None)
    status = given.get("status")
    return StateChange(
        status=None if status is None else PresenceStatus(status),
        location=given.get("location"),
        activity=given.get("activity"),
        battery=given.get("battery"),
        charging=given.get("charging"),
        clear=cleared,
    )
