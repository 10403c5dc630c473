"""The presence store and the services over it: merging devices, deadlines, the sweep, dead nodes.

The Redis store is what production runs; the in-process one serves the embedded mode. Both must
behave alike, so the behaviour tests run against each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
from django.conf import settings

from presence import services
from presence.services import (
    presence_device_join,
    presence_device_leave,
    presence_devices_join,
    presence_devices_leave,
    presence_sweep,
)
from presence.state import DevicePresence, DiffKind
from presence.store import MemoryPresenceStore, PresenceStore, RedisPresenceStore, presence_store
from tests.concurrency import race

WEDDING, MEMBER = 9001, 77


def _device(
    name: str, *, member: int = MEMBER, node: str = "n1", last_seen: float, interval: int = 10
) -> DevicePresence:
    return DevicePresence(
        wedding_id=WEDDING,
        member_id=member,
        role="photographer",
        device=name,
        node=node,
        heartbeat_interval=interval,
        last_seen=last_seen,
    )


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.requires_redis), "memory"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[PresenceStore]:
    """Each store, installed as the process's store so the services use it."""
    chosen: PresenceStore
    if request.param == "redis":
        client = redis.Redis.from_url(str(settings.REDIS_URL))
        chosen = RedisPresenceStore(client)
    else:
        chosen = MemoryPresenceStore()
    monkeypatch.setattr(services, "presence_store", lambda: chosen)
    yield chosen
    if isinstance(chosen, RedisPresenceStore):
        client.close()


def _join(store: PresenceStore, device: DevicePresence, now: float) -> DiffKind | None:
    return presence_device_join(device=device, now=now).kind


def test_devices_merge_into_one_member_and_only_the_first_and_last_are_joins_and_leaves(store) -> None:
    now = time.time()
    assert _join(store, _device("phone", last_seen=now), now) is DiffKind.JOIN
    assert _join(store, _device("tablet", last_seen=now), now) is DiffKind.UPDATE  # devices 1 -> 2
    told = store.told(wedding_id=WEDDING, now=now)
    assert told[MEMBER][0].devices == 2
    assert presence_device_leave(wedding_id=WEDDING, member_id=MEMBER, device="phone", now=now).kind is DiffKind.UPDATE
    change = presence_device_leave(wedding_id=WEDDING, member_id=MEMBER, device="tablet", now=now)
    assert change.kind is DiffKind.LEAVE
    assert store.told(wedding_id=WEDDING, now=now) == {}
    assert store.devices(wedding_id=WEDDING, now=now) == []


def test_heard_again_is_no_change_worth_telling(store) -> None:
    now = time.time()
    _join(store, _device("phone", last_seen=now), now)
    assert _join(store, _device("phone", last_seen=now + 5), now + 5) is None


def test_versions_only_grow(store) -> None:
    now = time.time()
    first = presence_device_join(device=_device("phone", last_seen=now), now=now)
    gone = presence_device_leave(wedding_id=WEDDING, member_id=MEMBER, device="phone", now=now)
    back = presence_device_join(device=_device("phone", last_seen=now), now=now)
    assert first.version < gone.version < back.version


def test_a_silent_device_is_gone_at_its_deadline_even_before_the_sweep(store) -> None:
    now = time.time()
    _join(store, _device("phone", last_seen=now, interval=10), now)  # deadline: 2.5 x 10 s
    assert [d.device for d in store.devices(wedding_id=WEDDING, now=now + 24.9)] == ["phone"]
    assert MEMBER in store.told(wedding_id=WEDDING, now=now + 24.9)
    assert store.devices(wedding_id=WEDDING, now=now + 25.1) == []
    assert store.told(wedding_id=WEDDING, now=now + 25.1) == {}
    assert store.due(now=now + 25.1, limit=10) == [(WEDDING, MEMBER, "phone")]


def test_the_sweep_tells_each_leave_once(store) -> None:
    now = time.time()
    _join(store, _device("phone", last_seen=now), now)
    _join(store, _device("phone", member=MEMBER + 1, last_seen=now + 20), now + 20)
    assert presence_sweep(now=now + 26) == 1  # only the first member's device has passed its deadline
    assert presence_sweep(now=now + 26) == 0
    assert set(store.told(wedding_id=WEDDING, now=now + 26)) == {MEMBER + 1}


def test_heartbeats_push_deadlines_forward_never_back_and_name_devices_already_gone(store) -> None:
    now = time.time()
    phone = _device("phone", last_seen=now)
    _join(store, phone, now)
    assert store.heartbeat(node="n1", seen=[replace(phone, last_seen=now + 20)], node_ttl=15, now=now + 20) == []
    assert store.devices(wedding_id=WEDDING, now=now + 40)  # heard at +20: live until +45
    store.heartbeat(node="n1", seen=[replace(phone, last_seen=now + 1)], node_ttl=15, now=now + 21)  # older
    assert store.devices(wedding_id=WEDDING, now=now + 40)
    presence_sweep(now=now + 46)
    stranger = _device("tablet", last_seen=now + 46)
    missing = store.heartbeat(node="n1", seen=[replace(phone, last_seen=now + 46), stranger], node_ttl=15, now=now + 46)
    assert {d.device for d in missing} == {"phone", "tablet"}


def test_a_device_heard_after_its_deadline_passed_is_missing_so_it_joins_again_through_a_change(store) -> None:
    now = time.time()
    phone = _device("phone", last_seen=now)
    _join(store, phone, now)
    # Past its deadline (readers already count it gone) but not swept yet: not silently revived.
    missing = store.heartbeat(node="n1", seen=[replace(phone, last_seen=now + 30)], node_ttl=15, now=now + 30)
    assert [d.device for d in missing] == ["phone"]


def test_the_sweep_leaves_a_device_heard_after_it_was_listed(store) -> None:
    now = time.time()
    phone = _device("phone", last_seen=now)
    _join(store, phone, now)
    assert store.due(now=now + 26, limit=10) == [(WEDDING, MEMBER, "phone")]
    # Heard just after the sweep listed it, before it takes it away (a node's batch may land there).
    store.heartbeat(node="n1", seen=[replace(phone, last_seen=now + 25)], node_ttl=15, now=now + 24.9)
    change = services._expire(wedding_id=WEDDING, member_id=MEMBER, device="phone", node=None, now=now + 26)
    assert change.kind is None
    assert [d.device for d in store.devices(wedding_id=WEDDING, now=now + 26)] == ["phone"]


def test_a_node_that_stops_saying_it_is_alive_loses_its_devices_to_the_sweep(store) -> None:
    now = time.time()
    _join(store, _device("phone", node="doomed", last_seen=now, interval=30), now)
    _join(store, _device("tablet", member=MEMBER + 1, node="healthy", last_seen=now, interval=30), now)
    store.heartbeat(node="doomed", seen=[], node_ttl=15, now=now)
    store.heartbeat(node="healthy", seen=[], node_ttl=15, now=now)
    assert store.dead_nodes() == {}
    _kill_node(store, "doomed")
    assert store.dead_nodes() == {"doomed": [(WEDDING, MEMBER, "phone")]}
    assert presence_sweep(now=now + 1) == 1  # long before the device's own deadline (75 s)
    assert set(store.told(wedding_id=WEDDING, now=now + 1)) == {MEMBER + 1}
    assert store.dead_nodes() == {}  # forgotten once it has nothing left


def _kill_node(store: PresenceStore, node: str) -> None:
    """What a SIGKILL leaves behind: the node's liveness runs out."""
    if isinstance(store, RedisPresenceStore):
        store._redis.delete(f"wedsync:node-alive:{node}")
    else:
        assert isinstance(store, MemoryPresenceStore)
        store._alive[node] = 0.0


def test_a_batch_gives_each_update_its_own_change_in_order_even_for_one_member_twice(store) -> None:
    now = time.time()
    joins = presence_devices_join(
        devices=[
            _device("phone", member=1, last_seen=now),
            _device("phone", member=2, last_seen=now),
            _device("tablet", member=1, last_seen=now),  # sees the phone's join before it
        ],
        now=now,
    )
    assert [(c.member_id, c.kind) for c in joins] == [(1, DiffKind.JOIN), (2, DiffKind.JOIN), (1, DiffKind.UPDATE)]
    told = store.told(wedding_id=WEDDING, now=now)
    assert {member: state.devices for member, (state, _v) in told.items()} == {1: 2, 2: 1}
    leaves = presence_devices_leave(devices=[(WEDDING, 1, "phone"), (WEDDING, 2, "phone"), (WEDDING, 1, "tablet")])
    assert [(c.member_id, c.kind) for c in leaves] == [(1, DiffKind.UPDATE), (2, DiffKind.LEAVE), (1, DiffKind.LEAVE)]
    assert store.told(wedding_id=WEDDING, now=now) == {}
    assert store.told_wire(wedding_ids=[WEDDING, WEDDING + 1], now=now) == {WEDDING: [], WEDDING + 1: []}


@pytest.mark.requires_redis
def test_a_batch_meeting_a_concurrent_change_still_applies_every_update_once() -> None:
    """A batch is one optimistic transaction over all its members: another node changing one of
    them makes it retry (in halves), and nothing is lost or applied twice."""
    store = presence_store()
    assert isinstance(store, RedisPresenceStore)
    now = time.time()
    members = list(range(700, 760))

    def batch() -> list[DiffKind | None]:
        devices = [_device("batch", member=member, last_seen=now) for member in members]
        return [change.kind for change in presence_devices_join(devices=devices, now=now)]

    def other_node() -> list[DiffKind | None]:
        return [
            presence_device_join(device=_device(f"other-{i}", member=members[i % 7], node="n2", last_seen=now)).kind
            for i in range(30)
        ]

    works = iter([batch, other_node])  # one thread takes each
    results = race(lambda: next(works)(), threads=2)
    assert len(results) == 2
    told = store.told(wedding_id=WEDDING, now=now)
    # Every member joined once by the batch; the first seven also hold the other node's devices.
    assert sorted(told) == members
    assert [told[m][0].devices for m in members[:7]] == [1 + len(range(i, 30, 7)) for i in range(7)]
    assert all(told[m][0].devices == 1 for m in members[7:])
    kinds = [kind for result in results for kind in result]  # type: ignore[union-attr]
    assert kinds.count(DiffKind.JOIN) == len(members)  # each member's first device, whoever came first


@pytest.mark.requires_redis
def test_two_nodes_joining_one_member_at_once_announce_exactly_one_join() -> None:
    """Each member's change is one optimistic transaction: however the race goes, one join, the
    rest updates, and every device counted."""
    store = presence_store()
    assert isinstance(store, RedisPresenceStore)
    for round_ in range(5):
        member = 500 + round_
        names = iter(f"device-{i}" for i in range(4))
        now = time.time()

        def join(member: int = member, names: Iterator[str] = names, now: float = now) -> DiffKind | None:
            return presence_device_join(device=_device(next(names), member=member, last_seen=now), now=now).kind

        kinds = race(join, threads=4)
        assert sorted(str(k) for k in kinds) == ["joins", "updates", "updates", "updates"], kinds
        assert store.told(wedding_id=WEDDING, now=now)[member][0].devices == 4


@pytest.mark.requires_redis
def test_two_sweepers_at_once_tell_each_leave_once() -> None:
    now = time.time()
    for member in range(600, 610):
        presence_device_join(device=_device("phone", member=member, last_seen=now), now=now)
    told = race(lambda: presence_sweep(now=now + 26), threads=3)
    assert sum(told) == 10, told  # type: ignore[arg-type]
    assert presence_store().told(wedding_id=WEDDING, now=now + 26) == {}


@pytest.mark.requires_redis
def test_a_device_whose_member_hash_was_lost_is_cleaned_up_instead_of_due_for_ever() -> None:
    store = presence_store()
    assert isinstance(store, RedisPresenceStore)
    now = time.time()
    presence_device_join(device=_device("kiosk", last_seen=now), now=now)
    store._redis.delete(f"wedsync:presence:{WEDDING}:{MEMBER}")  # evicted, say
    presence_sweep(now=now + 26)
    assert store.due(now=now + 26, limit=10) == []
    assert store.told(wedding_id=WEDDING, now=now) == {}
    assert store.dead_nodes() == {}
