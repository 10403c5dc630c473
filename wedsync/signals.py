"""Signals the core domain sends when someone's access changes.

The realtime app listens and tells every node, so live sockets feel the change at once; the core
does not need to know how sockets work.
"""

from django.dispatch import Signal

# kwargs: user_id, generation. Every token issued to the user before is now unusable.
tokens_revoked = Signal()
# kwargs: user_id, wedding_id, member_id, reason ("role_changed", "deactivated", "removed", ...).
member_access_changed = Signal()
# kwargs: user_id, wedding_id, member_id. A change that keeps the member's access (a display name,
# the key-person flag, vendor details): what nodes remember about the member is out of date.
member_details_changed = Signal()
