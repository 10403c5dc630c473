"""Event webhooks: an integrator's service account subscribes a URL to a wedding's events, and WedSync
POSTs them there, in seq order, in signed batches, retried with backoff; a batch that runs out of
attempts is dead-lettered and its subscription paused at it, for staff (or the integrator) to resume.

``subscriptions``: who may subscribe, and subscribing, rotating, pausing and resuming (audited).
``delivery``: the beat sweep that hands each subscription with something to send to one task, and
that task's claimed, signed, ordered attempts. Nothing here runs when an event is published.
Decision record: docs/decisions/0032-outbound-event-webhooks.md; receivers' contract: docs/webhooks.md.
"""
