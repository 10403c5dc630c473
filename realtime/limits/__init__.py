"""Limits shared by every node through Redis, failing open while Redis is away (on a wedding day a
message that flows beats a perfect count), by job:

- ``publish_rate``: a member's publishes per minute (the ``limits`` library's sliding window).
- ``ops``: a user's socket operations per minute (fixed windows).
- ``devices``: a user's devices, each kept alive by its node, and each device's reconnects.
- ``addresses``: handshakes, open sockets and unauthenticated API requests per source address.
- ``node``: :class:`~realtime.limits.node.Limits`, the per-event-loop Redis connection the socket
  limits share, and the consumer's address admission through it.
- ``breaker`` and ``counting``: what they share (the breaker that stops asking a failed Redis, the
  fixed-window count and what a check decides).
"""
