"""WebSocket routes. The protocol endpoint ``/ws/v1/`` lands with the realtime core."""

from django.urls import URLPattern, URLResolver

websocket_urlpatterns: list[URLPattern | URLResolver] = []
