"""A new socket's place among its user's devices (REALTIME_DEVICE_LIMITS), across nodes."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qs

from realtime.db import per_socket_db
from realtime.layer_send import layer_group_send
from realtime.limits.devices import device_limit_for
from realtime.limits.node import node_limits
from realtime.messages import ControlMessage
from realtime.names import NODES_GROUP
from realtime.services.sockets import device_limit_close_audit
from wedsync.services.audit import ClientInfo

_DEVICE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_device_limit_close_audit = per_socket_db(device_limit_close_audit)  # wrapped once (realtime.db)


@dataclass(frozen=True, slots=True)
class DeviceAdmitted:
    allowed: bool  # False: the policy closes this very socket (4029)
    reconnects: int  # this device's connects in the last hour, before this one


def device_name_of(*, query_string: str) -> str:
    """The ``device`` query parameter, when it is a plausible device name (else none)."""
    values = parse_qs(query_string).get("device", [])
    return values[0] if values and _DEVICE_NAME.match(values[0]) else ""


def device_key_of(*, client_device: str, user_agent: str) -> str:
    """The device's stable name across processes: the one it gave, else its user agent's hash
    (``hash()`` is salted per process)."""
    return client_device or f"ua:{zlib.crc32(user_agent.encode()):x}"


async def socket_device_admit(
    *, user_id: int, connection_id: str, roles: list[str], device_key: str, client: ClientInfo
) -> DeviceAdmitted:
    """Count the device and apply REALTIME_DEVICE_LIMIT_POLICY: the connections it closes are
    audited, and those on any node are told to close (4029)."""
    admission = await node_limits().device_admit(
        user_id=user_id, connection_id=connection_id, roles=roles, device_key=device_key
    )
    if admission.close:
        await _device_limit_close_audit(
            user_id=user_id, connection_id=connection_id, closed=admission.close, client=client
        )
    for other in admission.close:
        if other == connection_id:
            return DeviceAdmitted(allowed=False, reconnects=admission.reconnects)
        layer_group_send(NODES_GROUP, ControlMessage(kind="close_connection", user=user_id, connection=other))
    return DeviceAdmitted(allowed=True, reconnects=admission.reconnects)


def subscribe_floor_for(*, roles: list[str], weddings: int) -> int:
    """The subscribe budget a resume needs: every wedding of every device, twice."""
    return 2 * weddings * device_limit_for(roles)
