"""Django's HTTP side under daphne, with a request's middleware and view run in one thread.

Every view of the product is synchronous, and most middleware (WhiteNoise, the session
revocation check, Django's own ``MiddlewareMixin`` classes in async mode) runs its hooks in a
thread. Django's stock ASGI handler builds its chain around an async core, so a request crosses
between the event loop and a thread once per hook (decision 0033 counts them). Each crossing
waits for an event loop that is busy writing frames to every socket on the node.
:class:`OneThreadASGIHandler` builds the chain in Django's WSGI (synchronous) mode instead and runs
it whole with one ``sync_to_async`` call, so a request makes three crossings: ``request_started``,
the chain, and closing the response.

Django's handler also starts a thread for every request and joins it on the event loop when the
request ends. Here a request borrows one of ``HTTP_REQUEST_THREADS`` long-lived single-thread
executors for its whole life (asgiref's ``ThreadSensitiveContext(executor=...)``), so its chain, its
close and the database connection they share stay on one thread as before, and a burst of requests
waits on the loop for a free thread instead of starting more.

It overrides three methods of Django's handlers, so :func:`require_verified_django` refuses a Django
release it was not read against.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

# The Django releases whose ASGIHandler.__call__ and BaseHandler.load_middleware / get_response /
# get_response_async this module was read against; a new one is added once its handlers are read again and
# tests/wedsync/test_http_handler.py passes on it.
VERIFIED_DJANGO_VERSIONS = frozenset({"5.2.19"})


class UnverifiedDjangoError(RuntimeError):
    """Django is at a release whose handlers this module was not read against."""


def require_verified_django(version: str) -> None:
    if version not in VERIFIED_DJANGO_VERSIONS:
        known = ", ".join(sorted(VERIFIED_DJANGO_VERSIONS))
        raise UnverifiedDjangoError(
            f"wedsync.http_handler overrides Django's request handler methods and knows Django {known}, "
            f"not {version}: read django/core/handlers/base.py and asgi.py of the new release against it, "
            "then add the version to VERIFIED_DJANGO_VERSIONS"
        )


class RequestThreads:
    """Single-thread executors lent to one request at a time and kept for the next. At most
    ``size`` are lent at once on an event loop; a request past that waits for one to come back."""

    def __init__(self, *, size: int) -> None:
        self.size = size
        self._idle: collections.deque[ThreadPoolExecutor] = collections.deque()
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def lent(self) -> AsyncIterator[ThreadPoolExecutor]:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.size)
        async with slots:
            executor = (
                self._idle.pop() if self._idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-request")
            )
            try:
                yield executor
            finally:
                self._idle.append(executor)


class OneThreadASGIHandler(ASGIHandler):
    """Django's ASGI handler whose middleware chain and view run synchronously, in one thread per
    request, borrowed from a pool."""

    def __init__(self) -> None:
        require_verified_django(django.get_version())
        super().__init__()
        self.request_threads = RequestThreads(size=settings.HTTP_REQUEST_THREADS)

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # Django's own opens a ThreadSensitiveContext() that starts a thread and joins it on the loop.
        async with self.request_threads.lent() as executor, ThreadSensitiveContext(executor=executor):
            await self.handle(scope, receive, send)

    def load_middleware(self, is_async: bool = False) -> None:
        # The stock handler asks for the async chain; the sync one is what WSGI servers run.
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> Any:
        # Thread-sensitive, inside the request's ThreadSensitiveContext: the thread it borrowed, which
        # also closes the response (and returns its database connection to the pool).
        response: HttpResponseBase = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        return response


def one_thread_asgi_application() -> OneThreadASGIHandler:
    """What ``django.core.asgi.get_asgi_application`` does, with the one-thread handler."""
    django.setup(set_prefix=False)
    return OneThreadASGIHandler()
