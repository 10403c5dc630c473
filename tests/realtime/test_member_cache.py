"""A node's cache of publishers' memberships (realtime.member_cache, decision 0039): publishes hit
it, and no change of role, membership or name outlives the path that reports it: the control
message every node gets, or, when that message is lost, the node's own access check."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.contrib.auth.models import User
from django.test import override_settings
from prometheus_client import REGISTRY

from realtime.client import ClientError, RealtimeClient
from realtime.member_cache import MemberCache
from realtime.messages import ControlMessage
from realtime.node import housekeeping
from realtime.node import hub as hub_module
from realtime.selectors import member_row_for_publish
from tests.monitoring.test_socket_metrics import scrape
from tests.personas import WeddingParty, make_wedding_party
from tests.realtime.conftest import Client, bearer
from tests.realtime.nodes import Node, cluster
from wedsync.models import Member
from wedsync.permissions import Role
from wedsync.services.members import member_remove, member_save
from wedsync.settings import channel_layer_config

pytestmark = [pytest.mark.requires_postgres, pytest.mark.requires_redis, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "member-cache-test-" + "x" * 32


def lookups(outcome: str) -> float:
    return REGISTRY.get_sample_value("wedsync_member_cache_lookups_total", {"outcome": outcome}) or 0.0


def invalidations(source: str) -> float:
    return REGISTRY.get_sample_value("wedsync_member_cache_invalidations_total", {"source": source}) or 0.0


async def publish(client: Client, wedding_id: int, type_name: str, data: dict[str, Any]) -> dict[str, Any]:
    return await client.request("publish", topic=f"wedding:{wedding_id}", type=type_name, data=data)


async def next_event(client: Client) -> dict[str, Any]:
    while True:
        frame = await client.receive()
        if frame.get("op") == "event":
            return frame


async def until(condition: Any, *, within: float = 5) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  a counter, not an event
            await asyncio.sleep(0.02)


def held_pairs(cache: MemberCache) -> set[tuple[int, int]]:
    return {(entry.user_id, entry.wedding_id) for entry in cache.held()}


def in_process_cache() -> MemberCache:
    return hub_module._hubs[asyncio.get_running_loop()].members


def _change(member: Member, **fields: Any) -> None:
    fresh = Member.objects.get(pk=member.pk)
    for name, value in fields.items():
        setattr(fresh, name, value)
    member_save(member=fresh, actor=None)


# --- one node, in this process ---------------------------------------------------------------------


async def test_publishes_after_the_first_read_the_cache(party: WeddingParty, sockets) -> None:
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    hits, misses = lookups("hit"), lookups("miss")
    for n in range(5):
        assert (await publish(planner, party.wedding.pk, "chat.message", {"text": f"n{n}"}))["status"] == "ok"
    assert (lookups("hit") - hits, lookups("miss") - misses) == (4, 1)


async def test_a_renamed_member_publishes_under_the_new_name_at_once(party: WeddingParty, sockets) -> None:
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    assert (await publish(planner, party.wedding.pk, "chat.message", {"text": "before"}))["status"] == "ok"
    assert (await next_event(planner))["from"]["name"] != "Priya (lead planner)"
    pair = (party.priya.user_id, party.wedding.pk)
    assert pair in held_pairs(in_process_cache())
    # A change that keeps access: no token is revoked and the socket stays; the cached name goes.
    await database_sync_to_async(_change)(party.priya, display_name="Priya (lead planner)")
    await until(lambda: pair not in held_pairs(in_process_cache()))
    assert (await publish(planner, party.wedding.pk, "chat.message", {"text": "after"}))["status"] == "ok"
    assert (await next_event(planner))["from"]["name"] == "Priya (lead planner)"


async def test_a_role_changed_without_signals_is_found_by_the_access_check(party: WeddingParty, sockets) -> None:
    """A bulk update sends no message (as when a message is lost): the node's access check, every
    5 s, drops the cached role, so a socket that subscribes again publishes as what it is now."""
    caterer: Client = await sockets(party.carmen)
    await caterer.subscribe(party.wedding.pk)
    status = {"activity": "setup"}
    assert (await publish(caterer, party.wedding.pk, "vendor.status", status))["status"] == "ok"
    await database_sync_to_async(Member.objects.filter(pk=party.carmen.pk).update)(role=Role.GUEST.value)
    found = invalidations("access_check")
    hub = hub_module._hubs[asyncio.get_running_loop()]
    await housekeeping.access_reconcile(hub)  # the 5 s loop's one round, run now (or it ran meanwhile)
    assert (party.carmen.user_id, party.wedding.pk) not in held_pairs(hub.members)
    assert invalidations("access_check") == found + 1  # dropped once, by whichever round came first
    # The token was not revoked (no signal): the socket subscribes again, now as a guest.
    assert (await caterer.subscribe(party.wedding.pk))["status"] == "ok"
    refused = await publish(caterer, party.wedding.pk, "vendor.status", status)
    assert refused["error"]["code"] == "forbidden", refused


async def test_a_user_deactivated_without_signals_is_dropped_by_the_access_check(party: WeddingParty, sockets) -> None:
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    assert (await publish(planner, party.wedding.pk, "chat.message", {"text": "one"}))["status"] == "ok"
    hub = hub_module._hubs[asyncio.get_running_loop()]
    assert (party.priya.user_id, party.wedding.pk) in held_pairs(hub.members)
    await database_sync_to_async(User.objects.filter(pk=party.priya.user_id).update)(is_active=False)
    await housekeeping.access_reconcile(hub)
    assert (party.priya.user_id, party.wedding.pk) not in held_pairs(hub.members)


async def test_an_unchanged_membership_stays_cached_through_the_access_check(party: WeddingParty, sockets) -> None:
    planner: Client = await sockets(party.priya)
    await planner.subscribe(party.wedding.pk)
    assert (await publish(planner, party.wedding.pk, "chat.message", {"text": "one"}))["status"] == "ok"
    found = invalidations("access_check")
    await housekeeping.access_reconcile(hub_module._hubs[asyncio.get_running_loop()])
    hits = lookups("hit")
    assert (await publish(planner, party.wedding.pk, "chat.message", {"text": "two"}))["status"] == "ok"
    assert (invalidations("access_check"), lookups("hit")) == (found, hits + 1)


# --- the cache on its own ----------------------------------------------------------------------------


def test_a_read_that_raced_an_invalidation_is_not_kept(party: WeddingParty) -> None:
    cache: MemberCache

    def read_then_hear_of_a_change(*, user_id: int, wedding_id: int) -> Any:
        row = member_row_for_publish(user_id=user_id, wedding_id=wedding_id)
        # The change commits and its message arrives while this read's row is on its way back.
        cache.forget(user_id=user_id, wedding_id=wedding_id, source="control")
        return row

    cache = MemberCache(seconds=60, size=100, read=read_then_hear_of_a_change)
    ids = {"user_id": party.priya.user_id, "wedding_id": party.wedding.pk}
    misses = lookups("miss")
    first = cache.member(**ids)
    assert first is not None and first.role == Role.PLANNER.value  # answered with what it read...
    cache.member(**ids)
    assert lookups("miss") == misses + 2  # ...and not stored: the next publish reads again


def test_entries_expire_and_forget_drops_only_what_it_names(party: WeddingParty) -> None:
    clock = {"now": 1000.0}  # the cache's clock stands still unless the test moves it
    cache = MemberCache(seconds=60, size=100, timer=lambda: clock["now"])
    priya = {"user_id": party.priya.user_id, "wedding_id": party.wedding.pk}
    paula = {"user_id": party.paula.user_id, "wedding_id": party.wedding.pk}
    for ids in (priya, paula):
        cache.member(**ids)
    assert {entry.user_id for entry in cache.held()} == {party.priya.user_id, party.paula.user_id}
    cache.forget(user_id=party.priya.user_id, source="control")
    assert [entry.user_id for entry in cache.held()] == [party.paula.user_id]
    clock["now"] += 61
    assert cache.held() == []
    off = MemberCache(seconds=0, size=100)
    misses = lookups("miss")
    off.member(**priya)
    off.member(**priya)
    assert (lookups("miss") - misses, off.held()) == (2, [])


def test_control_messages_drop_what_they_are_about(party: WeddingParty) -> None:
    other = make_wedding_party()
    second = Member.objects.create(wedding=other.wedding, user_id=party.priya.user_id, role=Role.GUEST.value)
    cache = MemberCache(seconds=60, size=100)
    priya_here = (party.priya.user_id, party.wedding.pk)
    priya_there = (party.priya.user_id, other.wedding.pk)
    paula_here = (party.paula.user_id, party.wedding.pk)

    def fill() -> None:
        for user_id, wedding_id in (priya_here, priya_there, paula_here):
            assert cache.member(user_id=user_id, wedding_id=wedding_id) is not None

    fill()
    cache.forget_for(ControlMessage(kind="close_connection", user=party.priya.user_id, connection="c1"))
    assert held_pairs(cache) == {priya_here, priya_there, paula_here}  # one socket closed: nothing changed
    cache.forget_for(
        ControlMessage(kind="member_updated", user=party.priya.user_id, wedding=other.wedding.pk, member=second.pk)
    )
    assert held_pairs(cache) == {priya_here, paula_here}
    fill()
    cache.forget_for(ControlMessage(kind="member_changed", user=party.paula.user_id, wedding=party.wedding.pk))
    assert held_pairs(cache) == {priya_here, priya_there}
    fill()
    cache.forget_for(ControlMessage(kind="tokens_revoked", user=party.priya.user_id, generation=3))
    assert held_pairs(cache) == {paula_here}  # all of the user's, in every wedding


def test_a_non_member_is_not_cached(party: WeddingParty) -> None:
    outsider = make_wedding_party().priya  # of another wedding
    cache = MemberCache(seconds=60, size=100)
    assert cache.member(user_id=outsider.user_id, wedding_id=party.wedding.pk) is None
    assert cache.held() == []


# --- two nodes: the control message reaches every node's cache ------------------------------------------


@contextlib.contextmanager
def layer_of(redis_url: str) -> Iterator[None]:
    """This process's member changes tell the cluster's nodes (their Redis, not the tests')."""
    with override_settings(CHANNEL_LAYERS={"default": channel_layer_config(redis_url=redis_url, kind="pubsub")}):
        channel_layers.backends.clear()
        try:
            yield
        finally:
            channel_layers.backends.clear()


def node_invalidations(node: Node) -> float:
    found = scrape(node.port, token=METRICS_TOKEN)
    return found.value("wedsync_member_cache_invalidations_total", source="control")


def node_lookups(node: Node) -> dict[str, float]:
    found = scrape(node.port, token=METRICS_TOKEN)
    return {outcome: found.value("wedsync_member_cache_lookups_total", outcome=outcome) for outcome in ("hit", "miss")}


async def dropped_on(node: Node, *, within: float = 10) -> None:
    """Until the node has dropped a cached membership for a control message."""
    async with asyncio.timeout(within):
        while not await asyncio.to_thread(node_invalidations, node):  # noqa: ASYNC110  a counter, not an event
            await asyncio.sleep(0.05)


async def connected(member: Member, node: Node, wedding_id: int) -> RealtimeClient:
    client = RealtimeClient(node.url, token=await bearer(member), reconnect=False)
    await client.start()
    await client.subscribe(f"wedding:{wedding_id}")
    return client


def _demote(member: Member) -> Member:
    _change(member, role=Role.GUEST.value)
    return Member.objects.get(pk=member.pk)


def _remove_and_add_back_as_guest(member: Member) -> Member:
    """Adding a member sends no message, so only the removal can have dropped the old row."""
    member_remove(member=Member.objects.get(pk=member.pk), actor=None)
    back = Member(wedding_id=member.wedding_id, user_id=member.user_id, role=Role.GUEST.value)
    member_save(member=back, actor=None)
    return back


@pytest.mark.parametrize("change", [_demote, _remove_and_add_back_as_guest], ids=["demoted", "removed_then_guest"])
async def test_a_vendor_made_a_guest_cannot_publish_what_the_cache_last_allowed(
    party: WeddingParty, tmp_path: Path, change: Any
) -> None:
    topic = f"wedding:{party.wedding.pk}"
    status = {"activity": "setup"}
    with cluster(tmp_path, extra_env={"METRICS_TOKEN": METRICS_TOKEN}) as nodes, layer_of(nodes.redis.url):
        a, b = nodes.nodes
        caterer = await connected(party.carmen, b, party.wedding.pk)
        for _ in range(3):
            await caterer.publish(topic, "vendor.status", status)
        assert node_lookups(b) == {"hit": 2.0, "miss": 1.0}  # the membership is cached on b
        await caterer.close()
        # Changed by a process that is neither node (an admin, the API): both hear it.
        now = await database_sync_to_async(change)(party.carmen)
        await dropped_on(b)
        again = await connected(now, b, party.wedding.pk)  # a new token: the old ones were revoked
        try:
            with pytest.raises(ClientError, match="forbidden"):
                await again.publish(topic, "vendor.status", status)
            assert node_lookups(b)["miss"] == 2.0  # read afresh, not from the cache
            await again.publish(topic, "chat.message", {"text": "a guest now"})  # what a guest may do
        finally:
            await again.close()
        assert "Traceback" not in a.log() + b.log()
