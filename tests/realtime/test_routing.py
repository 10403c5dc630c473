"""The node's ASGI application hands a protocol socket to its consumer's own coroutine, routes
every other socket path through channels' URLRouter, and is an ASGI 3 application to every server
that runs it (realtime.routing.NodeApplication, decision 0048)."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from asgiref.compatibility import guarantee_single_callable, is_double_callable
from django.urls import path

from realtime.consumers import RealtimeConsumer
from realtime.routing import PROTOCOL_PATH, NodeApplication
from tests.personas import WeddingParty
from tests.realtime.conftest import Client
from wedsync.asgi import application


def _scope(path: str, **extra: Any) -> dict[str, Any]:
    return {"type": "websocket", "path": path, "headers": [], "query_string": b"", **extra}


async def _receive() -> dict[str, Any]:
    return {"type": "websocket.disconnect", "code": 1000}


async def _send(message: dict[str, Any]) -> None:
    return None


def _handed_to(app: Any, scope: dict[str, Any]) -> Any:
    """The code of the coroutine ``app`` returns for ``scope`` (closed unrun)."""
    handed = app(scope, _receive, _send)
    handed.close()
    return handed.cr_code


@pytest.mark.parametrize("extra", [{}, {"root_path": ""}], ids=["as channels' tests scope it", "as daphne does"])
def test_a_protocol_socket_is_handed_to_the_consumers_own_coroutine(extra: dict[str, Any]) -> None:
    # No router or wrapper frame stays suspended above the consumer for the socket's life.
    assert _handed_to(application, _scope(PROTOCOL_PATH, **extra)) is RealtimeConsumer.__call__.__code__


@pytest.mark.parametrize(
    "scope",
    [_scope("/ws/v1/extra/"), _scope(PROTOCOL_PATH, root_path="/edge"), _scope("//ws/v1/")],
    ids=["another path", "behind a root path", "a doubled slash"],
)
def test_any_other_socket_path_goes_through_channels_url_router(scope: dict[str, Any]) -> None:
    assert _handed_to(application, scope).co_qualname == "URLRouter.__call__"


async def test_a_socket_at_an_unknown_path_is_refused_as_channels_refuses_it() -> None:
    with pytest.raises(ValueError, match="No route found for path 'ws/v2/'"):
        await application(_scope("/ws/v2/"), _receive, _send)


async def test_an_unknown_scope_type_is_refused_when_awaited() -> None:
    refused = application({"type": "lifespan"}, _receive, _send)  # no error before it is awaited
    with pytest.raises(ValueError, match="No application configured for scope type 'lifespan'"):
        await refused


def test_it_is_an_asgi3_application_to_asgiref_daphne_and_uvicorn() -> None:
    assert not is_double_callable(application)
    assert guarantee_single_callable(application) is application  # what daphne and channels call
    config = uvicorn.Config(application, lifespan="off", log_config=None)  # leave the tests' logging alone
    config.load()
    assert config.interface == "asgi3"


@pytest.mark.parametrize(
    ("route", "initkwargs"),
    [("ws/v1/", {"heartbeat_interval": 5}), ("ws/v2/", {})],
    ids=["consumer made with arguments", "protocol path not routed"],
)
def test_no_direct_hand_over_when_the_routes_do_not_give_the_path_a_plain_consumer(
    route: str, initkwargs: dict[str, Any]
) -> None:
    other = NodeApplication(http=_send, websocket_routes=[path(route, RealtimeConsumer.as_asgi(**initkwargs))])  # type: ignore[arg-type]
    assert _handed_to(other, _scope(PROTOCOL_PATH)).co_qualname == "URLRouter.__call__"


@pytest.mark.django_db(transaction=True)
async def test_a_planner_connects_subscribes_and_is_answered_through_it(party: WeddingParty, sockets: Any) -> None:
    client: Client = await sockets(party.priya)  # the real application, through channels' WebsocketCommunicator

    reply = await client.subscribe(party.wedding.pk, since=None)

    assert client.welcome is not None and client.welcome["op"] == "welcome"
    assert reply["status"] == "ok" and reply["data"]["seq"] == 0
