"""The test-only echo route (realtime/conformance.py) exists only when REALTIME_CONFORMANCE_ECHO is
on, which a production process refuses; with it off the socket routes are the product's alone."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from realtime import routing
from realtime.conformance import CONFORMANCE_ECHO_PATH, conformance_echo_app
from realtime.consumers import RealtimeConsumer
from wedsync.asgi import application


def _routes(conformance_echo: bool) -> list[tuple[str, object]]:
    return [
        (str(route.pattern), getattr(route.callback, "consumer_class", route.callback))
        for route in routing.websocket_routes(conformance_echo=conformance_echo)
    ]


def test_with_the_echo_off_the_socket_routes_are_protocol_v1_only() -> None:
    assert settings.REALTIME_CONFORMANCE_ECHO is False
    assert _routes(False) == [("ws/v1/", RealtimeConsumer)]
    served = [
        (str(route.pattern), getattr(route.callback, "consumer_class", None)) for route in routing.websocket_urlpatterns
    ]
    assert served == [("ws/v1/", RealtimeConsumer)]


def test_with_the_echo_on_it_is_added_beside_protocol_v1() -> None:
    assert _routes(True) == [("ws/v1/", RealtimeConsumer), (CONFORMANCE_ECHO_PATH, conformance_echo_app)]


async def test_the_served_application_has_no_echo_route() -> None:
    communicator = WebsocketCommunicator(application, f"/{CONFORMANCE_ECHO_PATH}")
    with pytest.raises(ValueError, match="No route found for path"):
        await communicator.connect()


async def test_the_echo_sends_back_text_binary_and_empty_messages() -> None:
    communicator = WebsocketCommunicator(conformance_echo_app, f"/{CONFORMANCE_ECHO_PATH}")
    connected, _ = await communicator.connect()
    assert connected
    # send_input: the communicator's send_to refuses empty messages (it tests them for truth).
    for message in ({"text": ""}, {"text": "héllo"}, {"bytes": b""}, {"bytes": b"\x00\xff"}):
        await communicator.send_input({"type": "websocket.receive", **message})
        assert await communicator.receive_output() == {"type": "websocket.send", **message}
    await communicator.disconnect()
