"""Publishing over HTTP (issue 20): each planner's POSTs are counted by the seqs they were answered
with, like its socket publishes; refusals and cut connections are seen, not assumed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest

from bench import report, report_docs
from bench.http_publishers import HttpPublishers, answered_seq
from bench.loadgen import LoadGenerator, SocketSpec
from bench.scenarios import at_common_rate, publish_capacity, step_carried


@dataclass
class FakeApi:
    """The product's event endpoint as far as the publishers see it: 201 with the next seq of the
    wedding; 429 for the token ``limited``; ``close_after_answer``: hang up after every answer
    without saying so, as a server dropping an idle keep-alive connection does."""

    port: int = 0
    close_after_answer: bool = False
    seqs: dict[str, int] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        protocol = h11.Connection(our_role=h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    protocol.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    writer.write(self.answer(protocol, request, bytes(body)))
                    await writer.drain()
                    if self.close_after_answer:
                        return
                    protocol.start_next_cycle()
                else:
                    return  # the client closed
        finally:
            writer.close()

    def answer(self, protocol: h11.Connection, request: h11.Request, body: bytes) -> bytes:
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        wedding = request.target.decode().split("/")[4]
        self.requests.append({"target": request.target.decode(), "headers": headers, "body": json.loads(body)})
        answer: dict[str, Any]
        if headers["authorization"] == "Bearer limited":
            status, answer = 429, {"error": {"code": "rate_limited", "message": "Too many messages"}}
        else:
            self.seqs[wedding] = self.seqs.get(wedding, 0) + 1
            status, answer = 201, {"seq": self.seqs[wedding], "id": "x"}
        encoded = json.dumps(answer).encode()
        response = h11.Response(status_code=status, headers=[("Content-Length", str(len(encoded)))])
        events = (response, h11.Data(data=encoded), h11.EndOfMessage())
        return b"".join(protocol.send(event) or b"" for event in events)


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = loop.create_future()

    async def serve() -> None:
        server = await asyncio.start_server(api.handle, "127.0.0.1", 0)
        api.port = server.sockets[0].getsockname()[1]
        started.set()
        await stop
        server.close()
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield api
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(timeout=10)
        loop.close()


def _planners(api: FakeApi, tokens: list[str]) -> LoadGenerator:
    specs = [
        SocketSpec(member=n, token=token, topic=f"wedding:{n}", publisher=True, role="planner")
        for n, token in enumerate(tokens, start=1)
    ]
    return LoadGenerator(f"ws://127.0.0.1:{api.port}/ws/v1/", specs, workers=1)


def test_each_planner_posts_its_paced_events_as_itself_with_a_fresh_key_each(fake_api: FakeApi) -> None:
    planners = _planners(fake_api, ["token-a", "token-b"])
    try:
        sent = planners.http_publish(rate=10, seconds=0.5)
        again = planners.http_publish(rate=10, seconds=0.5)  # no reset: what was stored adds up
    finally:
        planners.close()

    assert sent["published"] == {"wedding:1": [1, 2, 3, 4, 5], "wedding:2": [1, 2, 3, 4, 5]}
    assert again["published"]["wedding:1"] == list(range(1, 11))
    assert (sent["refused"], sent["unanswered"], sent["retries"]) == (0, 0, 0)
    assert len(sent["answer_seconds"]) == len(sent["send_lag_seconds"]) == 10
    requests = fake_api.requests
    assert {r["target"] for r in requests} == {"/api/v1/weddings/1/events/", "/api/v1/weddings/2/events/"}
    assert {r["headers"]["authorization"] for r in requests if "/1/" in r["target"]} == {"Bearer token-a"}
    assert len({r["headers"]["idempotency-key"] for r in requests}) == 20  # never reused
    assert all(r["body"]["type"] == "chat.message" and r["body"]["data"]["text"].startswith("sent ") for r in requests)
    # Kept alive: the answers come at once, so each planner's one connection serves all its POSTs.
    assert fake_api.connections == 2


def test_a_refused_post_is_counted_and_never_expected(fake_api: FakeApi) -> None:
    planners = _planners(fake_api, ["token-a", "limited"])
    try:
        sent = planners.http_publish(rate=10, seconds=0.3)
    finally:
        planners.close()

    assert sent["published"] == {"wedding:1": [1, 2, 3]}
    assert sent["refused"] == 3
    assert sent["why"][0].startswith("429: ")


def test_a_connection_the_server_dropped_is_retried_with_the_same_key(fake_api: FakeApi) -> None:
    fake_api.close_after_answer = True
    planners = _planners(fake_api, ["token-a"])
    try:
        sent = planners.http_publish(rate=10, seconds=0.3)
    finally:
        planners.close()

    assert sent["published"] == {"wedding:1": [1, 2, 3]}
    assert (sent["unanswered"], sent["refused"]) == (0, 0)
    assert sent["retries"] == 2  # the second and third POSTs each found their connection gone
    assert len({r["headers"]["idempotency-key"] for r in fake_api.requests}) == 3


def test_only_the_bench_s_own_servers_are_published_to() -> None:
    assert HttpPublishers.for_url("ws://127.0.0.1:8123/ws/v1/").port == 8123
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        HttpPublishers.for_url("ws://10.0.0.5:8123/ws/v1/")


def test_only_a_201_with_a_seq_is_a_stored_event() -> None:
    assert answered_seq(201, b'{"seq": 7, "id": "x"}') == 7
    assert answered_seq(200, b'{"seq": 7}') is None
    assert answered_seq(201, b"not json") is None
    assert answered_seq(201, b'{"seq": "7"}') is None


def _step(offered: float, *, p99: float = 20.0, lost: int = 0, refused: int = 0, per_s: float | None = None) -> dict:
    return {
        "publishes_offered_per_s": offered,
        "seconds": 6.0,
        "publishes_sent": int(offered * 6),
        "published": int(offered * 6) - refused,
        "publishes_per_s": offered if per_s is None else per_s,
        "publish_refused": refused,
        "lost": lost,
        "latency_ms_p99": p99,
        "server_cpu_us_per_publish": 1000.0,
    }


def test_a_step_carries_its_rate_only_stored_delivered_on_time_and_at_pace() -> None:
    assert step_carried(_step(100))
    assert not step_carried(_step(100, p99=100.1))
    assert not step_carried(_step(100, lost=1))
    assert not step_carried(_step(100, refused=1))
    assert not step_carried(_step(100, per_s=94.0))  # the answers took 6.4 s for a 6 s step
    assert not step_carried({**_step(100), "latency_ms_p99": None})


def test_capacity_is_the_highest_step_carried_and_the_variants_compare_at_the_lower_one() -> None:
    socket = publish_capacity([_step(50), _step(100), _step(200, p99=400.0)])
    http = publish_capacity([_step(50), _step(100, lost=2)])
    nothing = publish_capacity([_step(50, refused=3)])

    assert socket == {"capacity_publishes_per_s": 100, "capacity_offered_per_s": 100}
    assert http["capacity_offered_per_s"] == 50
    assert nothing == {"capacity_publishes_per_s": 0.0, "capacity_offered_per_s": 0.0}
    assert at_common_rate({"socket": socket, "http": http}) == 50
    assert at_common_rate({"socket": socket, "http": nothing}) is None


def _variant(capacity: float, p99: float, cpu: float) -> dict[str, Any]:
    steps = [{**_step(capacity, p99=p99), "carried": True}, {**_step(capacity * 2, p99=500.0), "carried": False}]
    return {
        "capacity_publishes_per_s": capacity,
        "capacity_offered_per_s": capacity,
        "common_rate_per_s": 100.0,
        "p99_ms_at_common_rate": p99,
        "server_cpu_us_per_publish_at_common_rate": cpu,
        "steps": steps,
    }


def _results() -> dict[str, Any]:
    product = {
        "connected": 1000,
        "sockets": 1000,
        "order": ["socket", "http"],
        "socket": _variant(200.0, 10.0, 2000.0),
        "http": _variant(100.0, 30.0, 8000.0),
        "capacity_ratio_http_socket": 0.5,
        "capacity_ratio_target": 0.5,
        "target_met": True,
    }
    run = {"product": product, "ceiling": {"not_run": "it has no HTTP API to publish through"}}
    return {"http_publish": {"runs": [run]}}


def test_the_report_compares_http_with_the_same_load_over_sockets() -> None:
    results = _results()
    summary = report.summarise(results)["http_publish"]

    assert set(summary["medians"]) == {"product"}
    assert summary["medians"]["product"]["capacity_publishes_per_s"] == 100.0  # HTTP's
    capacity = summary["ratios"]["capacity_publishes_per_s http/socket"]
    assert (capacity["median"], capacity["higher_is_better"]) == (0.5, True)
    assert summary["ratios"]["server_cpu_us_per_publish_at_common_rate http/socket"]["median"] == 4.0
    assert not any("ceiling" in ratio for ratio in summary["ratios"])
    headline = report.headline("http_publish", results["http_publish"]["runs"][0]["product"])
    assert "http/socket 0.5 (target >= 0.5: met)" in headline


def test_the_report_writes_each_variants_steps_and_marks_the_one_that_missed() -> None:
    results = _results()
    markdown = report_docs._scenario_markdown("http_publish", results["http_publish"], report.summarise(results))

    assert "| product | socket | 200.0 |" in markdown
    assert "| product | http (missed) | 200.0 |" in markdown
    assert "product: socket 200.0/s, http 100.0/s; http/socket 0.5 (target >= 0.5: met)" in markdown
    assert "ceiling: not run (it has no HTTP API to publish through)" in markdown
    assert "| capacity_publishes_per_s http/socket | 0.5 |" in markdown
