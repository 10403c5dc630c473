"""``Idempotency-Key`` on creating POSTs (decision 0031): the first answer is stored with the key, and
a retry (a lost reply, a client's timeout) gets that answer again instead of a second creation."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

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
                _idempotent_answer_store(
                    user=user, key=key, path=path, fingerprint=fingerprint, status_code=status_code, body=body
                )
    except IntegrityError:
        stored = idempotent_stored(user=user, key=key, path=path, fingerprint=fingerprint)
        if stored is None:
            raise
        return stored
    return Answer(status_code=status_code, body=body)


@functools.cache
def _columns() -> dict[str, str]:
    return {field.name: field.column for field in IdempotentRequest._meta.concrete_fields}


_STORED_FIELDS = ("user", "key", "request_path", "request_hash", "status_code", "body", "created_at")


def _idempotent_answer_store(
    *, user: User, key: str, path: str, fingerprint: str, status_code: int, body: dict[str, Any]
) -> None:
    """Insert the answer's row; a key taken meanwhile raises IntegrityError. One hand-written
    statement, as the ORM's ``create`` compiled it on each call (decision 0034); the body is adapted
    by its field, as the ORM would."""
    body_field = IdempotentRequest._meta.get_field("body")
    values = [user.pk, key, path[:300], fingerprint, status_code, body_field.get_db_prep_save(body, connection)]
    with connection.cursor() as cursor:
        cursor.execute(_idempotent_answer_store_sql(), [*values, timezone.now()])


@functools.cache
def _idempotent_answer_store_sql() -> str:
    quote_name, column = connection.ops.quote_name, _columns()
    columns = ", ".join(quote_name(column[name]) for name in _STORED_FIELDS)
    placeholders = ", ".join(["%s"] * len(_STORED_FIELDS))
    table = quote_name(IdempotentRequest._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608  names from the model


def idempotent_stored(*, user: User, key: str, path: str, fingerprint: str) -> Answer | None:
    """The stored answer to this key, if any (``replayed``); :class:`Refused` ``invalid`` when the
    key was used for another path or payload. Ask it before checks that refuse (and audit): a
    retry of a request that was answered gets its answer, whatever changed since."""
    # Every creating POST asks this first: one hand-written statement read with a plain cursor,
    # as the ORM's filter compiled it anew on each call (decision 0034).
    with connection.cursor() as cursor:
        cursor.execute(_idempotent_stored_sql(), [user.pk, key])
        row = cursor.fetchone()
    if row is None:
        return None
    request_path, request_hash, status_code, body = row
    if request_path != path[:300] or request_hash != fingerprint:
        raise Refused(
            code="invalid",
            message="This Idempotency-Key was used for another request: use a new key for a new request.",
        )
    body = json.loads(body)  # Django reads jsonb as text and leaves decoding to the field; this is its decoding
    return Answer(status_code=status_code, body=body, replayed=True)


@functools.cache
def _idempotent_stored_sql() -> str:
    quote_name, column = connection.ops.quote_name, _columns()
    columns = ", ".join(quote_name(column[name]) for name in ("request_path", "request_hash", "status_code", "body"))
    user, key = quote_name(column["user"]), quote_name(column["key"])
    table = quote_name(IdempotentRequest._meta.db_table)
    # Table and column names come from the model, never from input; at most one row (unique).
    return f"SELECT {columns} FROM {table} WHERE {user} = %s AND {key} = %s LIMIT 1"  # noqa: S608
