"""WebSocket routes: protocol version 1 at ``/ws/v1/`` (and, in a conformance run only, the echo),
and the node's ASGI application, which hands a protocol socket to its consumer directly."""

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from channels.routing import URLRouter
from django.conf import settings
from django.urls import URLPattern, URLResolver, path

from realtime.consumers import RealtimeConsumer

PROTOCOL_PATH = "/ws/v1/"
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def websocket_routes(*, conformance_echo: bool) -> list[URLPattern | URLResolver]:
    """The socket routes; ``conformance_echo`` adds the test-only echo (realtime/conformance.py)."""
    routes: list[URLPattern | URLResolver] = [path(PROTOCOL_PATH.lstrip("/"), RealtimeConsumer.as_asgi())]
    if conformance_echo:
        from realtime.conformance import CONFORMANCE_ECHO_PATH, conformance_echo_app

        # An ASGI application, which channels' URLRouter routes as it does a consumer; not a Django view.
        routes.append(path(CONFORMANCE_ECHO_PATH, conformance_echo_app))  # type: ignore[arg-type]
    return routes


websocket_urlpatterns = websocket_routes(conformance_echo=settings.REALTIME_CONFORMANCE_ECHO)


class NodeApplication:
    """The node's ASGI application: HTTP to Django, sockets to their routes.

    What channels' ``ProtocolTypeRouter``, ``URLRouter`` and ``as_asgi`` do for a socket at
    :data:`PROTOCOL_PATH`, without awaiting: ``__call__`` returns the consumer's own coroutine, so an
    idle socket keeps one application frame (above its inbox's ``get``) and daphne's scope, not four
    frames and a routed copy of the scope (decision 0048). Any other socket path goes through
    channels' ``URLRouter`` as before, and so does every socket if the routes no longer give
    :data:`PROTOCOL_PATH` to a plain ``RealtimeConsumer``.
    """

    def __init__(self, *, http: ASGIApp, websocket_routes: list[URLPattern | URLResolver]) -> None:
        self.http = http
        self.router = URLRouter(websocket_routes)
        self.protocol_consumer = _protocol_consumer(websocket_routes)

    @markcoroutinefunction  # an ASGI 3 application to asgiref, daphne and uvicorn: it returns a coroutine
    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "websocket":
            consumer = self.protocol_consumer
            if consumer is not None and scope["path"] == PROTOCOL_PATH and not scope.get("root_path"):
                return consumer()(scope, receive, send)
            return self.router(scope, receive, send)  # type: ignore[no-any-return]
        if kind == "http":
            return self.http(scope, receive, send)
        return _unsupported(kind)


def _protocol_consumer(routes: list[URLPattern | URLResolver]) -> type[RealtimeConsumer] | None:
    """The consumer class the routes give :data:`PROTOCOL_PATH`, if it is ``RealtimeConsumer`` made
    with no arguments (what the direct hand-over builds); None otherwise."""
    for route in routes:
        if str(route.pattern) == PROTOCOL_PATH.lstrip("/"):
            callback = getattr(route, "callback", None)
            if getattr(callback, "consumer_class", None) is RealtimeConsumer and not callback.consumer_initkwargs:  # type: ignore[union-attr]
                return RealtimeConsumer
            return None
    return None


async def _unsupported(kind: str) -> None:
    # Raised when awaited, as channels' ProtocolTypeRouter does (uvicorn's lifespan probe reads it so).
    raise ValueError(f"No application configured for scope type {kind!r}")
