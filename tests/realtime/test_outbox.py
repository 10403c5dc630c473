"""The per-socket outbox: priority order, conflation of low events, bounds, the 'ahead' mark."""

from __future__ import annotations

import asyncio
import json

from realtime.daphne.transport import WriteGate
from realtime.names import Priority
from realtime.outbox import Outbox


class Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.overflowed = False

    async def send(self, text: str) -> None:
        self.sent.append(text)

    def overflow(self) -> None:
        self.overflowed = True


def outbox_for(socket: Socket, *, max_frames: int = 100, max_bytes: int = 1_000_000) -> Outbox:
    return Outbox(
        send_text=socket.send, gate=None, max_frames=max_frames, max_bytes=max_bytes, on_overflow=socket.overflow
    )


def event(seq: int, kind: str = "chat.message") -> str:
    return json.dumps({"op": "event", "topic": "wedding:1", "seq": seq, "type": kind}, separators=(",", ":"))


async def run_until_sent(outbox: Outbox, socket: Socket, count: int) -> None:
    """Let the outbox's own writer (started by the first queued frame) send ``count`` frames."""
    async with asyncio.timeout(2):
        while len(socket.sent) < count:  # noqa: ASYNC110
            await asyncio.sleep(0)
    outbox.close()


async def test_higher_priorities_go_first_and_are_marked_ahead() -> None:
    socket = Socket()
    outbox = outbox_for(socket)
    outbox.put(event(1), priority=Priority.NORMAL, topic="wedding:1", seq=1)
    outbox.put(event(2), priority=Priority.NORMAL, topic="wedding:1", seq=2)
    outbox.put(event(3, "emergency.alert"), priority=Priority.EMERGENCY, topic="wedding:1", seq=3)
    await run_until_sent(outbox, socket, 3)
    frames = [json.loads(text) for text in socket.sent]
    assert [f["seq"] for f in frames] == [3, 1, 2]
    assert frames[0]["ahead"] is True  # sent before 1 and 2: the client must not resume past it
    assert "ahead" not in frames[1] and "ahead" not in frames[2]


async def test_in_order_delivery_is_not_marked() -> None:
    socket = Socket()
    outbox = outbox_for(socket)
    outbox.put(event(1, "emergency.alert"), priority=Priority.EMERGENCY, topic="wedding:1", seq=1)
    outbox.put(event(2), priority=Priority.NORMAL, topic="wedding:1", seq=2)
    await run_until_sent(outbox, socket, 2)
    assert all("ahead" not in json.loads(text) for text in socket.sent)


async def test_low_events_of_one_kind_are_conflated_to_the_newest() -> None:
    socket = Socket()
    outbox = outbox_for(socket)
    for seq in (1, 2, 3):
        outbox.put(event(seq, "vendor.status"), priority=Priority.LOW, topic="wedding:1", seq=seq, conflate_key="k")
    outbox.put(event(4), priority=Priority.NORMAL, topic="wedding:1", seq=4, conflate_key="other")
    assert outbox.queued == 2
    await run_until_sent(outbox, socket, 2)
    frames = [json.loads(text) for text in socket.sent]
    assert [f["seq"] for f in frames] == [4, 3]
    assert frames[0].get("ahead") is True and "ahead" not in frames[1]


async def test_higher_priorities_are_never_conflated() -> None:
    socket = Socket()
    outbox = outbox_for(socket)
    for seq in (1, 2):
        outbox.put(
            event(seq, "emergency.alert"), priority=Priority.EMERGENCY, topic="wedding:1", seq=seq, conflate_key="k"
        )
    assert outbox.queued == 2


async def test_past_the_bound_the_socket_is_cut_off_not_grown() -> None:
    socket = Socket()
    outbox = outbox_for(socket, max_frames=3)
    for seq in range(1, 5):
        outbox.put(event(seq), priority=Priority.NORMAL, topic="wedding:1", seq=seq)
    assert socket.overflowed
    outbox.put(event(5), priority=Priority.NORMAL, topic="wedding:1", seq=5)  # ignored once closed
    assert outbox.queued == 4


def test_conflation_keys_separate_subjects_and_spare_chat() -> None:
    from realtime.outbox import conflation_key

    def frame(event_type: str, data: dict, sender: int = 1) -> dict:
        return {"topic": "wedding:1", "type": event_type, "data": data, "from": {"member": sender}}

    assert conflation_key(frame("chat.message", {"text": "a"})) is None
    carmen, flora = frame("vendor.status", {"activity": "setup"}, 7), frame("vendor.status", {"activity": "setup"}, 8)
    assert conflation_key(carmen) != conflation_key(flora)
    assert conflation_key(carmen) == conflation_key(frame("vendor.status", {"activity": "working"}, 7))
    # One sender's changes of two records are two subjects; two senders' changes of one record, one.
    task_3, task_4 = (
        frame("record.updated", {"record": "task", "id": 3}),
        frame("record.updated", {"record": "task", "id": 4}),
    )
    assert conflation_key(task_3) != conflation_key(task_4)
    assert conflation_key(task_3) == conflation_key(frame("record.updated", {"record": "task", "id": 3}, 8))
    assert conflation_key(task_3) != conflation_key(frame("record.updated", {"record": "rsvp", "id": 3}))


def payload(frame: bytes) -> dict[str, object]:
    """The JSON inside one short server text frame."""
    assert frame[0] == 0x81 and frame[1] < 126  # final text frame, unmasked, short length
    decoded: dict[str, object] = json.loads(frame[2:])
    return decoded


async def test_a_direct_writer_sends_at_once_while_nothing_is_queued() -> None:
    written: list[bytes] = []
    outbox = Outbox(
        send_text=Socket().send, gate=None, write_frame=written.append, max_frames=10, max_bytes=10_000,
        on_overflow=lambda: None,
    )  # fmt: skip

    outbox.put(event(1), priority=Priority.NORMAL, topic="wedding:1", seq=1)

    assert [payload(frame)["seq"] for frame in written] == [1]  # no writer task was needed
    assert outbox.queued == 0


async def test_while_the_socket_is_not_writable_frames_queue_and_keep_their_order() -> None:
    written: list[bytes] = []
    gate = WriteGate()  # what daphne's transport pauses and resumes
    outbox = Outbox(
        send_text=Socket().send, gate=gate, write_frame=written.append, max_frames=10, max_bytes=10_000,
        on_overflow=lambda: None,
    )  # fmt: skip
    gate.pauseProducing()
    outbox.put(event(1), priority=Priority.NORMAL, topic="wedding:1", seq=1)
    outbox.put(event(2), priority=Priority.NORMAL, topic="wedding:1", seq=2)
    assert written == [] and outbox.queued == 2

    gate.resumeProducing()
    # Put while the backlog drains: it must queue behind it, not overtake it.
    outbox.put(event(3), priority=Priority.NORMAL, topic="wedding:1", seq=3)
    async with asyncio.timeout(2):
        while len(written) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0)
    outbox.put(event(4), priority=Priority.NORMAL, topic="wedding:1", seq=4)  # drained: direct again

    assert [payload(frame)["seq"] for frame in written] == [1, 2, 3, 4]
    outbox.close()


async def test_an_idle_outbox_holds_no_task_and_drain_returns_at_once() -> None:
    socket = Socket()
    outbox = outbox_for(socket)
    outbox.put(event(1), priority=Priority.NORMAL, topic="wedding:1", seq=1)

    await outbox.drain(within=2.0)

    assert len(socket.sent) == 1
    assert outbox._writer is None  # the writer ended with its queue: idle sockets cost no task
    async with asyncio.timeout(0.1):
        await outbox.drain(within=2.0)


async def test_a_paced_replay_waits_for_room_and_loses_nothing() -> None:
    socket = Socket()
    outbox = outbox_for(socket, max_frames=4)

    for seq in range(1, 21):
        await outbox.put_paced(event(seq), priority=Priority.NORMAL, topic="wedding:1", seq=seq)
    await outbox.drain(within=2.0)

    assert [json.loads(text)["seq"] for text in socket.sent] == list(range(1, 21))
    assert not socket.overflowed
