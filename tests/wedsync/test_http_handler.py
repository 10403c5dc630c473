"""The HTTP handler daphne serves (wedsync/http_handler.py): a request's middleware and view run in
one thread, so it crosses between the event loop and a thread three times, against the many of
Django's stock ASGI handler; that thread is borrowed from a bounded pool and kept, not started and
joined per request; and the handler refuses a Django release it was not read against."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from asgiref import sync as asgiref_sync
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_started

from tests.personas import make_wedding_party
from wedsync import http_handler
from wedsync.services.auth import access_token_issue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.requires_postgres, pytest.mark.requires_redis]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def crossings(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Every hand-over between the event loop and a thread, by direction and what was handed over."""
    counted: collections.Counter[str] = collections.Counter()
    for adapter, direction in ((asgiref_sync.SyncToAsync, "to thread"), (asgiref_sync.AsyncToSync, "to loop")):
        original = adapter.__call__

        def counting(
            self: Any, *args: Any, _original: Any = original, _direction: str = direction, **kwargs: Any
        ) -> Any:
            handed = getattr(self, "func", None) or getattr(self, "awaitable", None)
            counted[f"{_direction}: {getattr(handed, '__qualname__', handed)}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(adapter, "__call__", counting)
    return counted


async def _get(application: Any, path: str, token: str) -> dict[str, Any]:
    communicator = HttpCommunicator(
        application, "GET", path, headers=[(b"host", b"localhost"), (b"authorization", f"Bearer {token}".encode())]
    )
    answer = await communicator.get_response(timeout=10)
    await communicator.wait(timeout=5)  # the handler closes the response (and its connection) after sending it
    return answer


async def _planner_token_and_path() -> tuple[str, str]:
    party = await database_sync_to_async(make_wedding_party)()
    token = await database_sync_to_async(access_token_issue)(user=party.priya.user)
    return token, f"/api/v1/weddings/{party.wedding.pk}/"


async def test_a_request_crosses_to_its_thread_once_for_the_whole_chain(crossings: collections.Counter[str]) -> None:
    from wedsync.asgi import application

    token, path = await _planner_token_and_path()
    await _get(application, path, token)  # the first request sets up lazily what later ones reuse
    crossings.clear()

    answer = await _get(application, path, token)

    assert answer["status"] == 200, answer["body"]
    assert json.loads(answer["body"])["id"] == int(path.rstrip("/").rsplit("/", 1)[1])
    assert crossings == {
        "to thread: Signal.asend.<locals>.sync_send": 1,  # request_started's receivers
        "to thread: BaseHandler.get_response": 1,  # every middleware and the view
        "to thread: HttpResponseBase.close": 1,  # request_finished: the database connection goes back
    }


async def test_django_stock_handler_crosses_once_per_middleware_hook(crossings: collections.Counter[str]) -> None:
    token, path = await _planner_token_and_path()
    stock = ASGIHandler()
    await _get(stock, path, token)
    crossings.clear()

    answer = await _get(stock, path, token)

    assert answer["status"] == 200
    # What the one-thread handler saves: if Django's own handler ever gets this far down, drop ours.
    assert sum(crossings.values()) >= 10, crossings


@pytest.fixture
def request_threads() -> Iterator[collections.Counter[str]]:
    """The thread each request's chain starts on (request_started's receivers run there)."""
    seen: collections.Counter[str] = collections.Counter()

    def record(**_: Any) -> None:
        seen[f"{threading.current_thread().name} {threading.get_ident()}"] += 1

    request_started.connect(record, weak=False, dispatch_uid="test_http_handler")
    yield seen
    request_started.disconnect(dispatch_uid="test_http_handler")


async def test_requests_take_turns_on_the_pools_threads_and_none_is_started_per_request(
    settings: Any, request_threads: collections.Counter[str]
) -> None:
    settings.HTTP_REQUEST_THREADS = 2
    handler = http_handler.OneThreadASGIHandler()
    token, path = await _planner_token_and_path()
    before = threading.active_count()

    answers = await asyncio.gather(*(_get(handler, path, token) for _ in range(6)))
    answers += [await _get(handler, path, token) for _ in range(4)]

    assert [answer["status"] for answer in answers] == [200] * 10
    # Six at once went through two threads, and the four after them reused those.
    assert len(request_threads) == 2 and sum(request_threads.values()) == 10
    assert all(name.startswith("http-request") for name in request_threads)
    assert threading.active_count() <= before + 2


def test_a_django_release_the_handler_was_not_read_against_is_refused() -> None:
    with pytest.raises(http_handler.UnverifiedDjangoError) as refused:
        http_handler.require_verified_django("9.9.0")
    assert "knows Django 5.2.19, not 9.9.0" in str(refused.value)


def test_the_verified_django_is_the_one_requirements_lock_pins() -> None:
    pinned = re.search(r"^django==(\S+)", (ROOT / "requirements.lock").read_text(), re.MULTILINE | re.IGNORECASE)
    assert pinned is not None
    assert http_handler.VERIFIED_DJANGO_VERSIONS == {pinned.group(1)} == {django.get_version()}
