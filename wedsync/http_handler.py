"""Django's HTTP side under daphne, with a request's middleware and view run in one thread.

Every view of the product is synchronous, and most middleware (WhiteNoise, the session
revocation check, Django's own ``MiddlewareMixin`` classes in async mode) runs its hooks in a
thread. Django's stock ASGI handler builds its chain around an async core, so a request crosses
between the event loop and a thread once per hook: seventeen times for an API publish
(docs/decisions/0033-one-thread-per-http-request.md). Each crossing waits for an event loop that
is busy writing frames to every socket on the node. :class:`OneThreadASGIHandler` builds the chain
in Django's WSGI (synchronous) mode instead and runs it whole with one ``sync_to_async`` call, so a
request makes three crossings: ``request_started``, the chain, and closing the response.

It overrides two methods of Django's handlers, so :func:`require_verified_django` refuses a Django
release it was not read against.
"""

from __future__ import annotations

from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

# The Django releases whose BaseHandler.load_middleware / get_response / get_response_async this
# module was read against; a new one is added once its handlers are read again and
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


class OneThreadASGIHandler(ASGIHandler):
    """Django's ASGI handler whose middleware chain and view run synchronously, in one thread per request."""

    def __init__(self) -> None:
        require_verified_django(django.get_version())
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # The stock handler asks for the async chain; the sync one is what WSGI servers run.
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> Any:
        # Thread-sensitive, inside the ThreadSensitiveContext Django's handler opens per request: the
        # request's own thread, which also closes the response (and its database connection).
        response: HttpResponseBase = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        return response


def one_thread_asgi_application() -> OneThreadASGIHandler:
    """What ``django.core.asgi.get_asgi_application`` does, with the one-thread handler."""
    django.setup(set_prefix=False)
    return OneThreadASGIHandler()
