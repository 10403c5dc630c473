"""WebSocket routes: protocol version 1 at ``/ws/v1/``."""

from django.urls import URLPattern, URLResolver, path

from realtime.consumers import RealtimeConsumer

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    path("ws/v1/", RealtimeConsumer.as_asgi()),
]
