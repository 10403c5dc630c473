"""Every Redis key the product writes is named here, so that the nodes, the beat worker and the
tests that share one Redis agree on the names and nothing collides. Libraries that name their own
keys (limits, channels-redis, Django's cache) get their prefix from here too.

All keys start ``wedsync:`` (libraries' prefixes ``wedsync-`` or ``wedsync``); the layouts are
described where the keys are used: presence/store.py, realtime/limits/, wedsync/services/audit.py.
"""

from __future__ import annotations

# --- Presence (presence/store.py) -------------------------------------------------------------------

PRESENCE_DEADLINES = "wedsync:presence:deadlines"  # sorted set of device entries by deadline
PRESENCE_NODES = "wedsync:presence:nodes"  # the nodes that hold devices
PRESENCE_NODE_PREFIX = "wedsync:presence:node:"  # + node: its devices (the sweep's Lua appends the node)


def presence_member_key(*, wedding_id: int, member_id: int) -> str:
    return f"wedsync:presence:{wedding_id}:{member_id}"


def presence_alive_members_key(*, wedding_id: int) -> str:
    return f"wedsync:presence:{wedding_id}:alive"


def presence_told_key(*, wedding_id: int) -> str:
    return f"wedsync:presence:{wedding_id}:told"


def presence_node_key(*, node: str) -> str:
    return f"{PRESENCE_NODE_PREFIX}{node}"


def node_alive_key(*, node: str) -> str:
    return f"wedsync:node-alive:{node}"


# --- Devices, operation budgets, source addresses (realtime/limits/) ---------------------------------

DEVICE_ALIVE_PREFIX = "wedsync:device-alive:"  # + connection id (the connect's Lua appends it)


def devices_key(*, user_id: int) -> str:
    return f"wedsync:devices:{user_id}"


def device_alive_key(*, connection_id: str) -> str:
    return f"{DEVICE_ALIVE_PREFIX}{connection_id}"


def device_connects_key(*, user_id: int, device_key: str) -> str:
    return f"wedsync:connects:{user_id}:{device_key}"


def op_budget_key(*, op: str, user_id: int, window: int) -> str:
    return f"wedsync:ops:{op}:{user_id}:{window}"


def address_sockets_key(*, address: str) -> str:
    return f"wedsync:address-sockets:{address}"


def address_handshakes_key(*, address: str, bucket: int) -> str:
    return f"wedsync:address-handshakes:{address}:{bucket}"


def address_api_key(*, address: str, bucket: int) -> str:
    return f"wedsync:address-api:{address}:{bucket}"


# --- Aggregated audit refusals (wedsync/services/audit.py) -------------------------------------------

AUDIT_REFUSALS_PENDING = "wedsync:audit-refusals:pending"


def audit_refusal_window_key(*, start: int, action: str, reason: str, address: str) -> str:
    return f"wedsync:audit-refusals:window:{start}:{action}:{reason}:{address}"


# --- Libraries' prefixes --------------------------------------------------------------------------------

PUBLISH_RATE_PREFIX = "wedsync-rate"  # the limits library's publish rate counters
AUTH_RATE_PREFIX = "wedsync-auth-rate"  # the limits library's login and refresh throttles
CHANNEL_LAYER_PREFIX = "wedsync"  # channels-redis (core layer; the pub/sub one adds the database)
CACHE_PREFIX = "wedsync"  # Django's cache


# --- The node registry (monitoring/node_reports.py) --------------------------------------------------

NODE_REGISTRY = "wedsync:nodes"  # sorted set of node names by their last report's time


def node_report_key(*, node: str) -> str:
    """A node's last report (JSON), which expires when the node stops reporting."""
    return f"wedsync:node-report:{node}"


def node_drain_key(*, node: str) -> str:
    """Present while an operator has asked the node to drain (monitoring.services.nodes)."""
    return f"wedsync:node-drain:{node}"
