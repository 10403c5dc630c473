"""``Idempotency-Key`` on creating POSTs (decision 0031): the first answer is stored with the key, and
a retry (a lost reply, a client's timeout) gets that answer again instead of a second creation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from wedsync.models.idempotency import IdempotentRequest
from wedsync.refusals import Refused


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def request_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def idempotent_create(
    *, user: User, key: str, path: str, payload: Any, create: Callable[[], tuple[int, dict[str, Any]]]
) -> Answer:
    """Run ``create`` once per (user, key): it returns the answer's status and body, which is stored
    in the same transaction when it is a success (a refusal it returns is not kept, and what it
    audited stays). The same key again, for the same path and payload, gets the stored
    answer (``replayed``); for another path or payload it is refused ``invalid``. Two requests with
    the same key at once: one creates, the other's insert fails and it answers with the first's."""
    fingerprint = request_fingerprint(payload)
    stored = idempotent_stored(user=user, key=key, path=path, fingerprint=fingerprint)
    if stored is not None:
        return stored
    try:
        with transaction.atomic():
            status_code, body = create()
            if status_code < 300:  # a refusal is answered, not kept: the retry may well succeed
                IdempotentRequest.objects.create(
                    user=user,
                    key=key,
                    request_path=path[:300],
                    request_hash=fingerprint,
                    status_code=status_code,
                    body=body,
                )
    except IntegrityError:
        stored = idempotent_stored(user=user, key=key, path=path, fingerprint=fingerprint)
        if stored is None:
            raise
        return stored
    return Answer(status_code=status_code, body=body)


def idempotent_stored(*, user: User, key: str, path: str, fingerprint: str) -> Answer | None:
    """The stored answer to this key, if any (``replayed``); :class:`Refused` ``invalid`` when the
    key was used for another path or payload. Ask it before checks that refuse (and audit): a
    retry of a request that was answered gets its answer, whatever changed since."""
    # At most one row (unique per user and key): no ordering to compile or sort.
    found = next(iter(IdempotentRequest.objects.filter(user=user, key=key).order_by()[:1]), None)
    if found is None:
        return None
    if found.request_path != path[:300] or found.request_hash != fingerprint:
        raise Refused(
            code="invalid",
            message="This Idempotency-Key was used for another request: use a new key for a new request.",
        )
    return Answer(status_code=found.status_code, body=found.body, replayed=True)
