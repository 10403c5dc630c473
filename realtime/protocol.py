"""Protocol v1 message types (docs/protocol.md): every client frame's schema, and the server frames.

Client frames are decoded straight from the socket's text into these structs by msgspec, which
checks types, required fields, lengths and refuses unknown fields, before any service is called.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from presence.state import StateChange
from presence.vocabulary import PresenceStatus, VendorActivity
from realtime.names import EventType
from wedsync.models.records import LocationZone
from wedsync.refusals import ErrorCode as ErrorCode  # the protocol's codes, named where every app can raise them
from wedsync.refusals import Refused

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
PriorityName = Literal["low", "normal", "high", "critical", "emergency"]
Target = Annotated[str, msgspec.Meta(min_length=3, max_length=64)]


class _Frame(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    pass


class Subscribe(_Frame, tag="subscribe"):
    ref: Ref
    topic: Topic
    since: Seq | None = None
    epoch: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    min_priority: PriorityName = "low"


class Unsubscribe(_Frame, tag="unsubscribe"):
    ref: Ref
    topic: Topic


class Publish(_Frame, tag="publish"):
    ref: Ref
    topic: Topic
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    data: dict[str, Any]
    to: Annotated[list[Target], msgspec.Meta(min_length=1, max_length=100)] | None = None
    priority: PriorityName | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class Ack(_Frame, tag="ack"):
    topic: Topic
    seq: Seq
    ref: Ref | None = None


class Auth(_Frame, tag="auth"):
    ref: Ref
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class PresenceState(msgspec.Struct, forbid_unknown_fields=True):
    """What a ``presence`` op may set on its device (PROTOCOL.md section 6). An absent field stays
    as it was; ``null`` clears location, activity, battery or charging."""

    status: Literal["online", "away", "busy", "offline"] | msgspec.UnsetType = msgspec.UNSET
    location: LocationZone | msgspec.UnsetType | None = msgspec.UNSET
    activity: VendorActivity | msgspec.UnsetType | None = msgspec.UNSET
    battery: Annotated[int, msgspec.Meta(ge=0, le=100)] | msgspec.UnsetType | None = msgspec.UNSET
    charging: bool | msgspec.UnsetType | None = msgspec.UNSET

    def change(self) -> StateChange | None:
        """The fields this op set, and those it cleared with null; None when it set none."""
        given = {name: getattr(self, name) for name in self.__struct_fields__}
        given = {name: value for name, value in given.items() if value is not msgspec.UNSET}
        if not given:
            return None
        status = given.get("status")
        return StateChange(
            status=None if status is None else PresenceStatus(status),
            location=given.get("location"),
            activity=given.get("activity"),
            battery=given.get("battery"),
            charging=given.get("charging"),
            clear=frozenset(name for name, value in given.items() if value is None),
        )


class Presence(_Frame, tag="presence"):
    ref: Ref
    topic: Topic
    state: PresenceState


class Heartbeat(_Frame, tag="heartbeat"):
    ref: Ref | None = None
    # The round trip of the client's previous heartbeat, in milliseconds: connection quality.
    rtt: Annotated[int, msgspec.Meta(ge=0, le=600_000)] | None = None


RecordName = Literal["timeline_item", "task", "rsvp"]
OpId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
RecordId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Version = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
MAX_SYNC_OPS = 50


class SyncOp(msgspec.Struct, forbid_unknown_fields=True):
    """One change of a shared record (section 7): create (``id`` null), change, or ``delete``."""

    record: RecordName
    op_id: OpId  # the client's own id for the op: a resent op is answered the same and applied once
    id: RecordId | None = None
    base_version: Version | None = None
    changes: dict[str, Any] = msgspec.field(default_factory=dict)
    delete: bool = False


class Sync(_Frame, tag="sync"):
    """One op (its fields on the frame), or ``atomic: true`` with ``ops``: all or nothing."""

    ref: Ref
    topic: Topic
    record: RecordName | None = None
    op_id: OpId | None = None
    id: RecordId | None = None
    base_version: Version | None = None
    changes: dict[str, Any] | None = None
    delete: bool = False
    atomic: bool = False
    ops: Annotated[list[SyncOp], msgspec.Meta(min_length=1, max_length=MAX_SYNC_OPS)] | None = None

    def sync_ops(self) -> list[SyncOp]:
        """The frame's ops, or :class:`FrameError` when it mixes the two forms or misses a field."""
        single = self.record is not None or self.op_id is not None or self.id is not None or self.changes is not None
        if self.atomic:
            if self.ops is None or single or self.delete or self.base_version is not None:
                raise FrameError(
                    code="invalid", message="ops: an atomic sync carries its changes in ops only", ref=self.ref
                )
            return self.ops
        if self.ops is not None:
            raise FrameError(
                code="invalid", message="atomic: ops are applied all or nothing (atomic: true)", ref=self.ref
            )
        if self.record is None:
            raise FrameError(code="invalid", message="record: required (timeline_item, task or rsvp)", ref=self.ref)
        if self.op_id is None:
            raise FrameError(code="invalid", message="op_id: required (the client's id for this change)", ref=self.ref)
        return [
            SyncOp(
                record=self.record,
                op_id=self.op_id,
                id=self.id,
                base_version=self.base_version,
                changes=self.changes or {},
                delete=self.delete,
            )
        ]


ClientFrame = Subscribe | Unsubscribe | Publish | Ack | Auth | Presence | Heartbeat | Sync
CLIENT_OPS: frozenset[str] = frozenset(
    str(struct.__struct_config__.tag)
    for struct in (Subscribe, Unsubscribe, Publish, Ack, Auth, Presence, Heartbeat, Sync)
)

_decoder = msgspec.json.Decoder(ClientFrame)
_encoder = msgspec.json.Encoder()

# No frame of the protocol nests deeper than a few levels; a deep one (``[`` x 3000) would otherwise
# exhaust the decoder's recursion and end the socket with a server error.
MAX_NESTING = 32
# A JSON string (escapes included; one never closed runs to the end, so an unclosed quote costs one
# pass, not one pass per quote) or one bracket: what the nesting scan walks.
_NESTING_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\Z)|[\[\]{}]')
# NUL cannot be stored by PostgreSQL (text or jsonb); in a JSON text it can only be this escape.
_NUL_ESCAPE = "\\u0000"


class FrameError(Refused):
    """A client frame that could not be accepted: the protocol code, a message, and its ref if known."""

    def __init__(self, *, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(code=code, message=message)
        self.ref = ref


def _ref_of(raw: str | bytes) -> str | None:
    try:
        loose = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    ref = loose.get("ref") if isinstance(loose, dict) else None
    return ref if isinstance(ref, str) and len(ref) <= 128 else None


def _too_deep(raw: str) -> bool:
    """Whether ``raw`` nests arrays and objects deeper than :data:`MAX_NESTING`. Most frames hold
    fewer brackets than that in all, which two C-speed counts show; only the others are walked."""
    if raw.count("[") + raw.count("{") <= MAX_NESTING:
        return False
    depth = 0
    for token in _NESTING_TOKENS.finditer(raw):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif bracket in ("]", "}"):
            depth -= 1
    return False


def _nul_path(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first string (or key) in ``value`` that holds a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return path
            found = _nul_path(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def frame_decode(raw: str | bytes) -> ClientFrame:
    """Decode and validate one client frame, or raise :class:`FrameError` with the protocol code."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if _too_deep(text):
        raise FrameError(code="bad_json", message=f"The frame nests deeper than {MAX_NESTING} levels.")
    try:
        frame: ClientFrame = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        error = exc
    except (msgspec.DecodeError, RecursionError):
        raise FrameError(code="bad_json", message="The frame is not valid JSON.") from None
    else:
        if _NUL_ESCAPE in text:
            _refuse_nul(text)
        return frame
    try:
        loose = msgspec.json.decode(raw)
    except msgspec.DecodeError:  # valid JSON for one decoder is valid for the other; kept for safety
        raise FrameError(code="bad_json", message="The frame is not valid JSON.") from None
    if not isinstance(loose, dict):
        raise FrameError(code="invalid", message="A frame must be a JSON object.")
    ref = _ref_of(raw)
    op = loose.get("op")
    if not isinstance(op, str):
        raise FrameError(code="invalid", message="Missing `op`: every frame names its operation.", ref=ref)
    if op not in CLIENT_OPS:
        raise FrameError(code="unknown_op", message=f"Unknown op {op[:40]!r}.", ref=ref)
    raise FrameError(code="invalid", message=str(error), ref=ref)


def _refuse_nul(text: str) -> None:
    path = _nul_path(msgspec.json.decode(text))
    if path is not None:
        raise FrameError(code="invalid", message=f"{path}: text may not contain NUL (\\u0000).", ref=_ref_of(text))


def encode(frame: dict[str, Any]) -> str:
    return _encoder.encode(frame).decode()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reply_ok(ref: str | None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"op": "reply", "ref": ref, "status": "ok", "data": data or {}}


def reply_error(ref: str | None, code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"op": "reply", "ref": ref, "status": "error", "error": {"code": code, "message": message, **extra}}


def error_frame(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"op": "error", "code": code, "message": message, **extra}


def welcome_frame(
    *,
    session: str,
    user: dict[str, Any],
    memberships: list[dict[str, Any]],
    heartbeat: int,
    max_frame: int,
    now: datetime,
    node: str,
) -> dict[str, Any]:
    """The first frame of an accepted socket (PROTOCOL.md section 2)."""
    return {
        "op": "welcome",
        "session": session,
        "user": user,
        "memberships": memberships,
        "heartbeat_interval": heartbeat,
        "max_frame": max_frame,
        "server_time": iso(now),
        "node": node,
    }


class CloseCode(enum.IntEnum):
    """The close codes a server sends (docs/protocol.md section 6)."""

    GOING_AWAY = 1001  # the node is draining or shutting down: reconnect to another, resume with since
    BINARY = 1003  # a binary frame: not part of the protocol
    TRY_AGAIN = 1013  # RFC 6455 "try again later": this node cannot serve sockets yet, or too many from one address
    TOO_LARGE = 1009
    VIOLATIONS = 4400  # too many invalid frames
    UNAUTHORIZED = 4401
    SLOW = 4008  # too slow to keep up; resume with since
    DEVICES = 4029  # device limit, or a client that ignores retry_after


_CLOSE_NAMES: dict[int, str] = {
    1000: "normal",
    1005: "no_status",  # closed without a code
    1006: "abnormal",  # the connection dropped without a close handshake
    1011: "server_error",
    4403: "forbidden",  # an origin refused at the handshake (realtime/auth.py)
    **{code.value: code.name.lower() for code in CloseCode},
}


def close_code_name(code: int | None) -> str:
    """A close code's name for metrics: a closed set, whatever code a client sends."""
    return _CLOSE_NAMES.get(code or 1005, "other")


# --- The ``data`` of each event type a client may publish -------------------------------------------

ShortText = Annotated[str, msgspec.Meta(max_length=500)]
MemberId = Annotated[int, msgspec.Meta(ge=1)]


class _Data(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class ChatData(_Data):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    reply_to: Seq | None = None


class VendorStatusData(_Data):
    activity: VendorActivity
    member: MemberId | None = None  # the vendor concerned; the sender when omitted
    eta_minutes: Annotated[int, msgspec.Meta(ge=0, le=1440)] | None = None
    note: ShortText | None = None


class EmergencyData(_Data):
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    location: LocationZone | None = None


EVENT_DATA_SCHEMAS: dict[EventType, type[_Data]] = {
    EventType.CHAT_MESSAGE: ChatData,
    EventType.VENDOR_STATUS: VendorStatusData,
    EventType.EMERGENCY_ALERT: EmergencyData,
}


def event_data_validate(event_type: EventType, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` checked against its type's schema and normalised, or :class:`FrameError` (invalid)."""
    schema = EVENT_DATA_SCHEMAS[event_type]
    try:
        checked = msgspec.convert(data, schema)
    except msgspec.ValidationError as exc:
        raise FrameError(code="invalid", message=f"data: {exc}") from None
    normalised: dict[str, Any] = msgspec.to_builtins(checked)
    return normalised
