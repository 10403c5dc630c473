"""The node's paced timeout check still pings every socket that went quiet, and daphne leaves
alone the ones it hears messages from (each message counts as an answered ping)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import picows
import pytest

from tests.personas import WeddingParty
from tests.realtime.conftest import bearer
from tests.realtime.nodes import cluster

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

PING_INTERVAL = "1"  # seconds; daphne checks every 2 s


class CountingClient(picows.WSListener):
    """Answers pings itself, counting them; resolves ``welcome`` on the server's first frame."""

    def __init__(self) -> None:
        self.pings = 0
        self.closed = False
        self.welcome: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type == picows.WSMsgType.PING:
            self.pings += 1
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == picows.WSMsgType.TEXT and not self.welcome.done():
            self.welcome.set_result(json.loads(frame.get_payload_as_utf8_text()))

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.closed = True


async def open_client(url: str, token: str) -> tuple[picows.WSTransport, CountingClient]:
    transport, listener = await picows.ws_connect(
        CountingClient,
        url,
        enable_auto_pong=False,
        extra_headers={"Sec-WebSocket-Protocol": f"wedsync.v1, bearer.{token}"},
    )
    assert isinstance(listener, CountingClient)
    assert (await asyncio.wait_for(listener.welcome, 10))["op"] == "welcome"
    return transport, listener


async def test_a_chatty_socket_is_not_pinged_and_a_quiet_one_is(party: WeddingParty, tmp_path: Path) -> None:
    with cluster(tmp_path, count=1, daphne_options=("--ping-interval", PING_INTERVAL)) as nodes:
        url = nodes.nodes[0].url
        chatty_transport, chatty = await open_client(url, await bearer(party.priya))
        quiet_transport, quiet = await open_client(url, await bearer(party.gil))
        try:
            for beat in range(20):  # 6 s of heartbeats, 0.3 s apart: three or more daphne checks
                chatty_transport.send(
                    picows.WSMsgType.TEXT, json.dumps({"op": "heartbeat", "ref": f"h{beat}"}).encode()
                )
                await asyncio.sleep(0.3)
            assert quiet.pings >= 2  # pinged at every check once its interval passed
            assert chatty.pings == 0
            assert not quiet.closed and not chatty.closed  # the pongs kept the quiet one open
        finally:
            chatty_transport.disconnect()
            quiet_transport.disconnect()
