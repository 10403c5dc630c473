"""The ``/ws/v1/`` socket: the protocol's adapter between a client and the node.

Each frame is decoded and checked against its schema (realtime.protocol), spends its op budget
(realtime.socket_budget), then calls the node hub or one service, and the reply is shaped here.
Sockets never join channel-layer groups themselves: the node hub receives each event once per node
and hands it to :meth:`RealtimeConsumer.push_event` (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from monitoring.metrics import SOCKET_CLOSES, SOCKET_CONNECTS, SOCKETS_SHED
from realtime import protocol
from realtime.audit import node_audit
from realtime.auth import PROTOCOL_NAME, SocketIdentity, SocketRefused
from realtime.daphne.transport import connection_open, control_frames_heard, frame_writer_for, write_gate_for
from realtime.db import DATABASE_AWAY, per_socket_db
from realtime.limits.addresses import AddressAdmission
from realtime.limits.node import node_limits, socket_address_admit, socket_address_release
from realtime.limits.shedding import URGENT_GRACE_SECONDS, ShedVerdict, UrgentGrace, shed_tier, shed_verdict, urgent_of
from realtime.messages import ControlMessage
from realtime.names import Priority, wedding_topic
from realtime.node.hub import NodeHub, node_hub
from realtime.node.registry import socket_role
from realtime.node.replay import ConnectRead
from realtime.outbox import Outbox
from realtime.protocol import CloseCode, close_code_name
from realtime.services.devices import device_key_of, device_name_of, socket_device_admit, subscribe_floor_for
from realtime.services.sockets import socket_abuse_audit, socket_open, socket_shed_audit_entry
from realtime.socket_budget import SocketBudget
from realtime.socket_ops import DATABASE_OPS, OPS, RTT_STORE_MIN_SECONDS
from wedsync.models import AuditLog
from wedsync.services.audit import ClientInfo

logger = structlog.get_logger(__name__)

CONTROL_PRIORITY = Priority.EMERGENCY  # replies and notices are never queued behind events
TRY_AGAIN_SECONDS = 2.0  # the retry_after told with a 1013
DRAINING_MESSAGE = "This node is draining: reconnect, another node will answer, and resume with since."
DATABASE_AWAY_MESSAGE = "The database is not answering: try again shortly (a publish with the same idempotency_key)."
SHED_MESSAGE = "This node is too busy for now: try again after retry_after seconds, and resume with since."
HUB_READY_WAIT_SECONDS = 5.0  # how long a connect waits for the node's first hub start

# The socket's own thread hops, each wrapped once (realtime.db).
_socket_open = per_socket_db(socket_open)
_socket_abuse_audit = per_socket_db(socket_abuse_audit)


class RealtimeConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    # No per-socket channel: fan-out reaches sockets through the node hub, not the layer.
    channel_layer_alias = "__sockets_do_not_use_the_layer__"

    connection_id: str
    user_id: int
    identity: SocketIdentity
    client: ClientInfo
    connect_read: ConnectRead | None = None  # the memberships its connect read, the subscribes' first check
    hub: NodeHub
    budget: SocketBudget
    outbox: Outbox | None = None
    heartbeat_interval: int = 30  # seconds, as told in the welcome frame
    client_device: str = ""  # the client's stable name for this device (``?device=``), if any
    role = "none"  # what its memberships make it, for the node's report (realtime.node.registry.socket_role)
    _close_code: int | None = None  # the code its disconnect message gave
    reconnects: int = 0  # this device's connects in the last hour, minus this one
    _expiry: asyncio.TimerHandle | None = None
    closing = False
    _released = False
    rtt_stored_at = -RTT_STORE_MIN_SECONDS  # when a heartbeat's rtt last reached presence (monotonic)
    rtt_quality: str | None = None
    _heard = 0.0  # when the client last sent a frame (epoch seconds)
    _control_heard: Callable[[], float] = staticmethod(lambda: 0.0)  # ... or a ping or pong
    _address: AddressAdmission | None = None  # this socket's place among its address's open sockets
    _urgent_grace: UrgentGrace | None = (
        None  # let in past load shedding to raise an emergency (realtime.limits.shedding)
    )

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels' dispatch() hops to a thread before every message to close stale database
        # connections; this consumer reaches the ORM only through hops that do that themselves.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connect ------------------------------------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        if not connection_open(self.base_send):
            return  # gave up on while it waited its turn; its disconnect message follows
        query = self.scope.get("query_string", b"").decode("latin1")
        subprotocols: list[str] = list(self.scope.get("subprotocols") or [])
        self.client = ClientInfo.from_scope(self.scope)
        self._address = await socket_address_admit(client=self.client)
        if not self._address.allowed:
            message_text = "Too many connections from your network: try again later."
            retry = self._address.retry_after
            await self._refuse(
                CloseCode.TRY_AGAIN, protocol.error_frame("rate_limited", message_text, retry_after=retry)
            )
            return
        hub = node_hub()
        if not await hub.ready(within=HUB_READY_WAIT_SECONDS):
            # Nothing behind the socket yet (the channel layer's Redis is away): say when to come back.
            message_text = "This node is not ready: try again later."
            error = protocol.error_frame("unavailable", message_text, retry_after=TRY_AGAIN_SECONDS)
            await self._refuse(CloseCode.TRY_AGAIN, error)
            return
        if hub.draining:  # its /readyz says so too: the load balancer sends the client elsewhere next time
            await self._refuse(CloseCode.GOING_AWAY, protocol.error_frame("unavailable", DRAINING_MESSAGE))
            return
        if hub.database.away:  # nobody can be authenticated: come back once it answers
            error = protocol.error_frame("unavailable", DATABASE_AWAY_MESSAGE, retry_after=TRY_AGAIN_SECONDS)
            await self._refuse(CloseCode.TRY_AGAIN, error)
            return
        headers = {name.decode("latin1").lower(): value.decode("latin1") for name, value in self.scope["headers"]}
        scheme = self.scope.get("scheme", "ws")
        # Before the read: a member change heard from here on makes what it reads untrusted (ConnectRead).
        generation, read_at = hub.members.generation, time.monotonic()
        try:
            opened = await _socket_open(
                headers=headers, subprotocols=subprotocols, query_string=query, scheme=scheme, client=self.client
            )
        except SocketRefused as refused:
            await self._refuse(refused.close_code, protocol.error_frame(refused.code, refused.message))
            return
        except DATABASE_AWAY:
            await self._refuse_database_away(hub)
            return
        if not connection_open(self.base_send):
            return  # gone while it was authenticated: never accepted, so nothing to audit
        tier = shed_tier(memberships=opened.memberships, observer=opened.identity.observer)
        shed = shed_verdict(tier=tier, sockets=hub.sockets_counted(), loop_lag=hub.loop_lag.sustained)
        if shed is not None and not urgent_of(query_string=query, memberships=opened.memberships):
            await self._shed(shed, accepted_entry=opened.audit_entry)
            return
        if shed is not None:  # let in past the shedding to raise an emergency: its audit row says so
            opened.audit_entry.details = {**opened.audit_entry.details, "urgent": True}
        # Counted as the node's from the verdict on, so that a burst of connects cannot all pass one count.
        with hub.admitting_one():
            try:
                await node_audit().write(opened.audit_entry)
            except DATABASE_AWAY:
                await self._refuse_database_away(hub)
                return
            self.identity, memberships, roles = (
                opened.identity,
                opened.memberships,
                [m.role for m in opened.memberships],
            )
            self.user_id, self.connection_id = self.identity.user_id, uuid.uuid4().hex
            self.connect_read = ConnectRead(memberships=tuple(memberships), generation=generation, at=read_at)
            self.role = socket_role(roles=roles, observer=self.identity.observer)
            self.heartbeat_interval, self.client_device = opened.heartbeat, device_name_of(query_string=query)
            self.budget = SocketBudget(
                user_id=self.user_id,
                subscribe_floor=(
                    2 * settings.REALTIME_OBSERVE_MAX_WEDDINGS  # a board's every wedding, twice, as a member's resume
                    if self.identity.observer
                    else subscribe_floor_for(roles=roles, weddings=len(memberships))
                ),
            )
            self._heard, self._control_heard = time.time(), control_frames_heard(self.base_send)
            await self.accept(subprotocol=PROTOCOL_NAME if PROTOCOL_NAME in subprotocols else None)
            SOCKET_CONNECTS.labels("accepted").inc()
            writer = frame_writer_for(self.base_send)
            self.outbox = Outbox(
                send_text=self._send_text,
                gate=write_gate_for(self.base_send, send_buffer=settings.REALTIME_SOCKET_SEND_BUFFER),
                write_frame=writer.write if writer is not None else None,
                max_frames=settings.REALTIME_OUTBOX_MAX_FRAMES,
                max_bytes=settings.REALTIME_OUTBOX_MAX_BYTES,
                on_overflow=self.too_slow,
            )
            self.hub = hub
            self.hub.register(self)
            # Read once: the bearer token (a subprotocol) and the query (a ticket) are not kept for
            # the socket's life, in the scope every holder shares (decision 0048).
            self.scope["subprotocols"], self.scope["query_string"] = [], b""
        if not self.identity.observer:  # a staff observer is nobody's device: no member's limit to count it in
            await self._admit_device(roles)
            if self.closing:
                return
        self.send_frame(
            protocol.welcome_frame(
                session=self.connection_id,
                user={"id": self.user_id, "name": self.identity.user_name},
                memberships=[{"wedding": m.wedding_id, "member": m.member_id, "role": m.role} for m in memberships],
                heartbeat=opened.heartbeat,
                max_frame=settings.REALTIME_MAX_FRAME,
                now=timezone.now(),
                node=settings.REALTIME_NODE_NAME,
            )
        )
        self.schedule_expiry()
        if shed is not None:  # let in past the shedding to raise an emergency: it has a while to do so
            self._urgent_grace = UrgentGrace(
                verdict=shed,
                timer=asyncio.get_running_loop().call_later(URGENT_GRACE_SECONDS, self._urgent_unused),
                refusal_entry=socket_shed_audit_entry(
                    accepted_entry=opened.audit_entry, verdict=shed, client=self.client, urgent=True
                ),
            )

    async def _refuse_database_away(self, hub: NodeHub) -> None:
        logger.warning("socket.database_unavailable", op="connect")
        hub.database.failed()
        error = protocol.error_frame("unavailable", DATABASE_AWAY_MESSAGE, retry_after=TRY_AGAIN_SECONDS)
        await self._refuse(CloseCode.TRY_AGAIN, error)

    async def _shed(self, shed: ShedVerdict, *, accepted_entry: AuditLog) -> None:
        SOCKETS_SHED.labels(tier=shed.tier, cause=shed.cause).inc()
        # Refused first, audited in the node's next batch: a loaded node must not hold the refusal on a write.
        node_audit().write_soon(
            socket_shed_audit_entry(accepted_entry=accepted_entry, verdict=shed, client=self.client)
        )
        error = protocol.error_frame("unavailable", SHED_MESSAGE, retry_after=shed.retry_after)
        await self._refuse(CloseCode.TRY_AGAIN, error)

    def emergency_raised(self) -> None:
        """An emergency went out from this socket: one let in past the shedding for it may stay."""
        if self._urgent_grace is not None:
            self._urgent_grace.timer.cancel()
            self._urgent_grace = None

    def _urgent_unused(self) -> None:
        if self._urgent_grace is None or self.closing:
            return
        grace, self._urgent_grace = self._urgent_grace, None
        SOCKETS_SHED.labels(tier=grace.verdict.tier, cause="urgent_unused").inc()
        node_audit().write_soon(grace.refusal_entry)
        self.close_soon(CloseCode.TRY_AGAIN, "unavailable", SHED_MESSAGE, retry_after=grace.verdict.retry_after)

    async def _admit_device(self, roles: list[str]) -> None:
        admitted = await socket_device_admit(
            user_id=self.user_id,
            connection_id=self.connection_id,
            roles=roles,
            device_key=device_key_of(client_device=self.client_device, user_agent=self.client.user_agent),
            client=self.client,
        )
        self.reconnects = admitted.reconnects
        if not admitted.allowed:
            self.close_soon(CloseCode.DEVICES, "forbidden", "Too many devices: close one and try again.")

    async def _refuse(self, close_code: int, error: dict[str, Any]) -> None:
        """Accept, explain and close: browsers can read close codes, not handshake statuses."""
        SOCKET_CONNECTS.labels(close_code_name(close_code)).inc()
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept(subprotocol=PROTOCOL_NAME if PROTOCOL_NAME in subprotocols else None)
        await self.send(text_data=protocol.encode(error))
        await self.close(code=close_code)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    def send_frame(self, frame: dict[str, Any], *, priority: Priority = CONTROL_PRIORITY) -> None:
        if self.outbox is not None:
            self.outbox.put(protocol.encode(frame), priority=priority)

    def schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.identity.expires_at is not None:
            delay = max(self.identity.expires_at - time.time(), 0)
            self._expiry = asyncio.get_running_loop().call_later(
                delay, self.close_soon, CloseCode.UNAUTHORIZED, "unauthorized", "The token expired."
            )

    def close_soon(
        self, code: int, error: protocol.ErrorCode, message: str, *, retry_after: float | None = None
    ) -> None:
        """Close from a synchronous callback: say why, then close once queued frames are written."""
        if self.closing:
            return
        self.closing = True
        asyncio.get_running_loop().create_task(self._close_with(code, error, message, retry_after=retry_after))

    async def _close_with(
        self, code: int, error: protocol.ErrorCode, message: str, *, retry_after: float | None = None
    ) -> None:
        if self.outbox is not None:
            if code != CloseCode.SLOW:  # what was answered before still goes out; a slow reader gets nothing more
                await self.outbox.drain(within=1.0)
            self.outbox.close()
        extra = {} if retry_after is None else {"retry_after": retry_after}
        await self.send(text_data=protocol.encode(protocol.error_frame(error, message, **extra)))
        await self.close(code=code)

    # --- what the node asks of the socket (realtime.node.socket) -------------------------------------

    def heard_at(self) -> float:
        return max(self._heard, self._control_heard())

    @property
    def token_generation(self) -> int:
        return self.identity.generation

    @property
    def session_key(self) -> str | None:
        return self.identity.session_key

    def too_slow(self) -> None:
        self.close_soon(CloseCode.SLOW, "unavailable", "Too slow to keep up: reconnect and resume with since.")

    def going_away(self) -> None:
        self.close_soon(CloseCode.GOING_AWAY, "unavailable", DRAINING_MESSAGE)

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
            if priority >= Priority.CRITICAL:  # each one is an ack the client is asked for
                self.budget.ack_owed()
            self.outbox.put(text, priority=priority, topic=topic, seq=seq, conflate_key=conflate_key, framed=framed)

    def on_control(self, message: ControlMessage) -> None:
        kind = message.kind
        if kind == "close_connection" and message.connection == self.connection_id:
            self.close_soon(CloseCode.DEVICES, "forbidden", "Signed in on too many devices: this, the oldest, closes.")
        elif kind == "tokens_revoked" and message.generation > self.identity.generation:
            self.close_soon(CloseCode.UNAUTHORIZED, "unauthorized", "Your access was revoked: log in again.")
        elif kind == "access_ended":
            why = "Your account was deactivated." if message.reason == "deactivated" else "Your session ended."
            self.close_soon(CloseCode.UNAUTHORIZED, "unauthorized", f"{why} Log in again.")
        elif (
            kind == "member_changed"
            # An observer's subscriptions end with oversight only, a member's with membership only.
            and (message.reason == "oversight_ended") == self.identity.observer
            and self.hub.unsubscribe(self, wedding_id=message.wedding)
        ):
            self.send_frame({"op": "unsubscribed", "topic": wedding_topic(message.wedding), "reason": message.reason})

    # --- receive ------------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing or self.outbox is None:
            return
        self._heard = time.time()
        if text_data is None:
            self.closing = True  # first: a hub callback during the drain must not start a second close
            await self._close_with(CloseCode.BINARY, "invalid", "Binary frames are not part of the protocol.")
            return
        if len(text_data.encode("utf-8", "surrogatepass")) > settings.REALTIME_MAX_FRAME:
            # daphne refuses these from the frame header; this covers other servers and tests.
            self.closing = True
            limit = settings.REALTIME_MAX_FRAME
            await self._close_with(CloseCode.TOO_LARGE, "too_large", f"Frames are limited to {limit} bytes.")
            return
        try:
            frame = protocol.frame_decode(text_data)
        except protocol.FrameError as exc:
            self._violation()
            self.send_frame(protocol.reply_error(exc.ref, exc.code, exc.message))
            return
        over = await self.budget.spend(frame)
        if over is not None:
            op, retry_after = over
            ref = getattr(frame, "ref", None)
            if ref is not None or op != "ack":  # an ack is answered only when it asks to be
                message = f"Too many {op} requests: wait and retry."
                self.send_frame(protocol.reply_error(ref, "rate_limited", message, retry_after=retry_after))
            await self.refused_for_rate(op)
            return
        if self.hub.database.away and type(frame) in DATABASE_OPS:
            self._database_away(frame)
            return
        handler = OPS[type(frame)]
        try:
            await handler(self, frame)
        except DATABASE_AWAY:  # each write is one transaction: none, or all of it (then a retry's key finds it)
            logger.warning("socket.database_unavailable", op=type(frame).__name__, connection=self.connection_id)
            self.hub.database.failed()
            self._database_away(frame)
        except Exception:
            logger.exception("socket.handler_failed", op=type(frame).__name__, connection=self.connection_id)
            self.send_frame(
                protocol.reply_error(getattr(frame, "ref", None), "server_error", "Something went wrong on our side.")
            )

    def _database_away(self, frame: protocol.ClientFrame) -> None:
        ref = getattr(frame, "ref", None)
        if ref is None and isinstance(frame, protocol.Ack):
            return  # an ack is answered only when it asks to be
        message, retry_after = DATABASE_AWAY_MESSAGE, TRY_AGAIN_SECONDS
        self.send_frame(protocol.reply_error(ref, "unavailable", message, retry_after=retry_after))

    async def refused_for_rate(self, op: str) -> None:
        """A client that keeps ignoring retry_after (REALTIME_ABUSE_REFUSALS a minute) is closed
        4029, audited."""
        refusals = self.budget.refused(op)
        if refusals is None or self.closing:
            return
        self.closing = True
        try:
            await _socket_abuse_audit(
                user_id=self.user_id, connection_id=self.connection_id, op=op, refusals=refusals, client=self.client
            )
        finally:
            await self._close_with(CloseCode.DEVICES, "rate_limited", "Too many requests over the limits: closing.")

    def _violation(self) -> None:
        if self.budget.violated():
            self.close_soon(CloseCode.VIOLATIONS, "invalid", "Too many invalid frames.")

    # --- disconnect ---------------------------------------------------------------------------------

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._close_code = message.get("code") or 1005
        await self._release()
        raise StopConsumer

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        # One task per socket: channels' await_many_dispatch would keep a receive task and an
        # asyncio.wait per idle socket to also listen on a layer channel, which these sockets lack.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        # However the consumer ends (disconnect, an error in connect, daphne cancelling it), the
        # socket leaves the hub and frees its device place.
        ended = "abnormal"  # daphne cancelled it without a disconnect message
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:  # not contextlib.suppress, whose object each idle socket would keep
            pass
        except Exception:
            ended = "server_error"  # daphne closes it 1011
            raise
        finally:
            if self.outbox is not None:  # accepted: a refused handshake counts among the connects
                SOCKET_CLOSES.labels(close_code_name(self._close_code) if self._close_code else ended).inc()
            await self._release()

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self._urgent_grace is not None:  # gone before its grace ran out: nothing to shed
            self._urgent_grace.timer.cancel()
        hub: NodeHub | None = getattr(self, "hub", None)
        if self.outbox is not None and hub is not None:
            self.outbox.close()
            hub.unregister(self)
            try:
                await node_limits().device_disconnect(user_id=self.user_id, connection_id=self.connection_id)
            except Exception:  # Redis away: the entry expires by itself within a minute
                logger.warning("socket.device_disconnect_failed", connection=self.connection_id)
        await socket_address_release(self._address)
