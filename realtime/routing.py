"""WebSocket routes: protocol version 1 at ``/ws/v1/`` (and, in a conformance run only, the echo)."""

from django.conf import settings
from django.urls import URLPattern, URLResolver, path

from realtime.consumers import RealtimeConsumer


def websocket_routes(*, conformance_echo: bool) -> list[URLPattern | URLResolver]:
    """The socket routes; ``conformance_echo`` adds the test-only echo (realtime/conformance.py)."""
    routes: list[URLPattern | URLResolver] = [path("ws/v1/", RealtimeConsumer.as_asgi())]
    if conformance_echo:
        from realtime.conformance import CONFORMANCE_ECHO_PATH, conformance_echo_app

        # An ASGI application, which channels' URLRouter routes as it does a consumer; not a Django view.
        routes.append(path(CONFORMANCE_ECHO_PATH, conformance_echo_app))  # type: ignore[arg-type]
    return routes


websocket_urlpatterns = websocket_routes(conformance_echo=settings.REALTIME_CONFORMANCE_ECHO)
