"""The stored answers behind ``Idempotency-Key`` (wedsync/services/idempotency.py, decision 0031):
read and written with hand-written statements (decision 0034), they keep the ORM's behaviour: the
body comes back as it was stored, a reused key is refused, and two requests racing with one key
create once and both get the first answer."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from tests.factories import UserFactory
from wedsync.models.idempotency import IdempotentRequest
from wedsync.refusals import Refused
from wedsync.services.idempotency import Answer, idempotent_create, idempotent_stored, request_fingerprint

pytestmark = [pytest.mark.requires_postgres]

PATH = "/api/v1/weddings/7/events/"
BODY = {"seq": 12, "id": "5f0c3c1e-8d7a-4a7e-9d39-2f6f5b1c9a10", "nested": {"names": ["Ana", "João"], "n": None}}


@pytest.mark.django_db
def test_a_stored_answer_is_read_back_as_it_was_given_and_a_reused_key_is_refused() -> None:
    user = UserFactory()
    created = idempotent_create(user=user, key="k-1", path=PATH, payload={"a": 1}, create=lambda: (201, BODY))
    assert created == Answer(status_code=201, body=BODY, replayed=False)
    row = IdempotentRequest.objects.get(user=user, key="k-1")
    assert (row.request_path, row.request_hash, row.status_code, row.body) == (
        PATH,
        request_fingerprint({"a": 1}),
        201,
        BODY,
    )
    assert row.created_at is not None
    replayed = idempotent_create(user=user, key="k-1", path=PATH, payload={"a": 1}, create=lambda: (201, {}))
    assert replayed == Answer(status_code=201, body=BODY, replayed=True)
    with pytest.raises(Refused) as other_payload:
        idempotent_stored(user=user, key="k-1", path=PATH, fingerprint=request_fingerprint({"a": 2}))
    assert other_payload.value.code == "invalid"
    with pytest.raises(Refused):
        idempotent_stored(user=user, key="k-1", path="/api/v1/weddings/", fingerprint=request_fingerprint({"a": 1}))
    assert (
        idempotent_stored(user=UserFactory(), key="k-1", path=PATH, fingerprint=request_fingerprint({"a": 1})) is None
    )


@pytest.mark.django_db
def test_a_refusal_is_answered_and_not_kept() -> None:
    user = UserFactory()
    refused = idempotent_create(
        user=user, key="k-2", path=PATH, payload={}, create=lambda: (429, {"error": {"code": "rate_limited"}})
    )
    assert refused.status_code == 429 and not refused.replayed
    assert not IdempotentRequest.objects.filter(user=user, key="k-2").exists()


@pytest.mark.django_db(transaction=True)
def test_two_requests_racing_with_one_key_create_once_and_both_answer_with_the_first() -> None:
    user = UserFactory()
    both_checked = threading.Barrier(2, timeout=10)
    created: list[str] = []
    answers: dict[str, Answer] = {}
    errors: list[BaseException] = []

    def request(name: str) -> None:
        def create() -> tuple[int, dict[str, Any]]:
            both_checked.wait()  # each has found no stored answer: both go on to create
            created.append(name)
            return 201, {"by": name}

        try:
            answers[name] = idempotent_create(user=user, key="race", path=PATH, payload={}, create=create)
        except BaseException as error:  # kept for the assertion below, which names it
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == [] and sorted(created) == ["first", "second"]
    stored = IdempotentRequest.objects.get(user=user, key="race")
    winner = stored.body["by"]
    assert answers[winner] == Answer(status_code=201, body={"by": winner}, replayed=False)
    loser = "second" if winner == "first" else "first"
    assert answers[loser] == Answer(status_code=201, body={"by": winner}, replayed=True)
