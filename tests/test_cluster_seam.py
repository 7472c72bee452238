"""The cluster seam without sockets or Redis: Selector, the node-to-node messages,
LocalCluster, and the pub/sub base driven through the in-memory bus."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any, Callable, List, Tuple

import orjson
import pytest

from maim_message.backends.cluster_base import LocalCluster, Selector, user_key
from maim_message.backends.memory_bus import MemoryBus, MemoryCluster
from maim_message.backends.pubsub_messages import (
    AckMessage,
    FanoutMessage,
    PairMessage,
    decode_message,
    encode_message,
)
from maim_message.core.routing import RoutingTable
from maim_message.errors import ClusterError, MaimMessageError

from .fakes import FakeHost, conn_of, frame_payload, make_peer


async def settle(predicate: Callable[[], bool], turns: int = 200) -> None:
    """Let the bus's reader tasks run until ``predicate`` holds (no timers involved)."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    assert predicate(), "condition not reached"


def texts(peer: Any) -> List[str]:
    return [orjson.loads(frame_payload(f))["payload"] for f in conn_of(peer).frames]


# -- Selector ------------------------------------------------------------------------------


def test_selector_names_local_connections_through_the_routing_indexes() -> None:
    routes = RoutingTable()
    routes.add("a1", "alice", "qq")
    routes.add("a2", "alice", "tg")
    routes.add("b1", "bob", "qq")
    assert Selector("all").local_targets(routes) == {"a1", "a2", "b1"}
    assert Selector("platform", "qq").local_targets(routes) == {"a1", "b1"}
    assert Selector("user", "alice").local_targets(routes) == {"a1", "a2"}
    assert Selector("conn", "b1").local_targets(routes) == {"b1"}
    assert Selector("conn", "zz").local_targets(routes) == set()
    assert Selector("platform", None).local_targets(routes) == set()
    with pytest.raises(ValueError):
        Selector("galaxy", "x").local_targets(routes)


def test_selector_matches_presence_entries_by_platform_user_key_or_uuid() -> None:
    info = {"platform": "qq", "uk": user_key("alice")}
    assert Selector("all").matches("u1", info)
    assert Selector("platform", "qq").matches("u1", info)
    assert not Selector("platform", "tg").matches("u1", info)
    assert Selector("user", "alice").matches("u1", info)
    assert not Selector("user", "bob").matches("u1", info)
    assert Selector("conn", "u1").matches("u1", info)
    assert not Selector("conn", "u2").matches("u1", info)


def test_selector_for_custom_targets_prefers_connection_then_user_then_platform() -> None:
    assert Selector.for_target("alice", "qq", "c1") == Selector("conn", "c1")
    assert Selector.for_target("alice", None, None) == Selector("user", "alice")
    assert Selector.for_target(None, "qq", None) == Selector("platform", "qq")
    assert Selector.for_target(None, None, None) is None
    assert Selector("all") == ("all", None)  # a plain tuple on the wire and in old code


# -- messages between nodes ----------------------------------------------------------------


def test_cluster_messages_round_trip_with_named_fields() -> None:
    messages = [
        PairMessage("n1", "alice", "qq", "m1", "17-0", b'{"x":"a\\nb"}'),
        FanoutMessage("n1", Selector("platform", "qq"), "m2", b"{}"),
        FanoutMessage("n2", Selector("all"), "m3", b"[1]"),
        AckMessage("n2", "alice", "qq", "m1", "uuid-1"),
    ]
    for message in messages:
        data = encode_message(message)
        assert decode_message(data) == message
    head = orjson.loads(encode_message(messages[0]).partition(b"\n")[0])
    assert head["type"] == "pair" and head["user"] == "alice"  # named, not positional


def test_messages_written_by_the_redis_scripts_decode() -> None:
    # cjson escapes '/' and leaves a missing stream id as ""
    lua = b'{"type":"pair","origin":"n\\/1","user":"u","platform":"qq","msg_id":"m",' \
          b'"stream_id":""}\npayload'
    assert decode_message(lua) == PairMessage("n/1", "u", "qq", "m", "", b"payload")


@pytest.mark.parametrize("data", [b'["P","n1"]', b'{"type":"nope"}', b"{not json"])
def test_unknown_cluster_messages_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_message(data)


def test_cluster_error_is_a_maim_message_error_without_redis() -> None:
    assert issubclass(ClusterError, MaimMessageError) and issubclass(ClusterError, RuntimeError)


# -- LocalCluster: the single-node send path ----------------------------------------------


async def test_local_cluster_queues_for_absent_pairs_and_counts_what_it_writes() -> None:
    host = FakeHost()
    local = host.cluster = LocalCluster("solo")
    await local.start(host)  # type: ignore[arg-type]
    assert await local.send_to_pair(("alice", "qq"), "m1", b'{"payload":"early"}') == {}
    alice = host.open(make_peer("a1", "alice"))
    assert texts(alice) == ["early"]  # the backlog on open
    bob = host.open(make_peer("b1", "bob", "tg"))
    sent = await local.fanout(Selector("platform", "tg"), "m2", b'{"payload":"tg only"}')
    assert sent == {"b1": True} and texts(bob) == ["tg only"]
    assert await local.fanout(Selector("conn", "gone"), "m3", b"{}") == {"gone": False}
    assert host.stats["messages_sent"] == 1  # the backlog write is a resend, not a send
    assert host.stats["bytes_sent"] == len(b'{"payload":"tg only"}')
    assert local.user_count() == 2 and set(local.connections()) == {"a1", "b1"}


async def test_local_cluster_waits_for_the_ack_when_asked() -> None:
    host = FakeHost()
    local = host.cluster = LocalCluster("solo")
    await local.start(host)  # type: ignore[arg-type]
    alice = host.open(make_peer("a1", "alice"))
    waiting = asyncio.ensure_future(
        local.send_to_pair(alice.pair, "m1", b'{"payload":"x"}', ack_timeout=5))
    await settle(lambda: len(conn_of(alice).frames) == 1)
    host.ack(alice, "m1")
    assert await waiting == {"a1": True}


# -- the pub/sub base on the in-memory bus ------------------------------------------------


async def two_nodes(**config: Any) -> Tuple[MemoryBus, FakeHost, FakeHost]:
    bus = MemoryBus()
    hosts = []
    for name in ("n1", "n2"):
        host = FakeHost(**config)
        host.cluster = MemoryCluster(bus, name)
        await host.cluster.start(host)
        hosts.append(host)
    return bus, hosts[0], hosts[1]


async def stop(*hosts: FakeHost) -> None:
    for host in hosts:
        await host.cluster.stop()


async def test_a_send_reaches_the_pair_on_another_node_and_the_ack_clears_the_store() -> None:
    bus, n1, n2 = await two_nodes()
    try:
        alice = n2.open(make_peer("a1", "alice"))
        await settle(lambda: bus.where.get(("alice", "qq")) == {"a1": "n2"})
        result = await n1.cluster.send_to_pair(("alice", "qq"), "m1", b'{"payload":"hi"}')
        assert result == {"a1": True}  # reported from the store's routing
        await settle(lambda: texts(alice) == ["hi"])
        assert [m for m, _ in bus.streams[("alice", "qq")].entries.items()] == ["m1"]
        n2.ack(alice, "m1")  # acks are deleted in one batch per loop turn
        await settle(lambda: ("alice", "qq") not in bus.streams)
    finally:
        await stop(n1, n2)


async def test_an_ack_on_another_node_answers_the_waiting_sender() -> None:
    _bus, n1, n2 = await two_nodes()
    try:
        alice = n2.open(make_peer("a1", "alice"))
        waiting = asyncio.ensure_future(n1.cluster.send_to_pair(
            ("alice", "qq"), "m1", b'{"payload":"x"}', ack_timeout=5))
        await settle(lambda: texts(alice) == ["x"])
        n2.ack(alice, "m1")
        assert await waiting == {"a1": True}
    finally:
        await stop(n1, n2)


async def test_a_pair_connecting_to_another_node_gets_its_backlog_in_order() -> None:
    _bus, n1, n2 = await two_nodes()
    try:
        alice = n1.open(make_peer("a1", "alice"))
        for i in range(3):
            await n1.cluster.send_to_pair(alice.pair, f"m{i}", b'{"payload":"%d"}' % i)
        await settle(lambda: texts(alice) == ["0", "1", "2"])  # after its stream was read
        n1.ack(alice, "m0")
        n1.close(alice)  # its node keeps nothing; the store keeps m1, m2
        assert n1.delivery.stats()["outbox_depth"] == 0
        again = n2.open(make_peer("a1", "alice"))
        await settle(lambda: texts(again) == ["1", "2"])
    finally:
        await stop(n1, n2)


async def test_fanouts_reach_every_node_and_report_remote_connections() -> None:
    _bus, n1, n2 = await two_nodes()
    try:
        a = n1.open(make_peer("a1", "alice", "qq"))
        b = n2.open(make_peer("b1", "bob", "qq"))
        c = n2.open(make_peer("c1", "carol", "tg"))
        result = await n1.cluster.fanout(Selector("platform", "qq"), "f1",
                                         b'{"payload":"qq"}')
        assert result == {"a1": True, "b1": True}
        await settle(lambda: texts(b) == ["qq"])
        assert texts(a) == ["qq"] and texts(c) == []
        result = await n1.cluster.fanout(Selector("user", "carol"), "f2", b'{"payload":"c"}')
        assert result == {"c1": True}
        await n1.cluster.fanout(Selector("conn", "b1"), "f3", b'{"payload":"only b"}')
        await settle(lambda: texts(c) == ["c"] and texts(b) == ["qq", "only b"])
        assert n1.cluster.user_count() == 3
        assert {i["node"] for i in n1.cluster.connections().values()} == {"n1", "n2"}
    finally:
        await stop(n1, n2)


async def test_a_node_taken_for_dead_registers_again() -> None:
    bus, n1, n2 = await two_nodes()
    try:
        n2.open(make_peer("b1", "bob"))
        bus.members.discard("n2")  # as if its liveness had expired
        bus.presence["n2"].clear()
        deadline = time.monotonic() + 10  # the heartbeat runs every 50 ms
        while n2.cluster.rejoins == 0:
            assert time.monotonic() < deadline, "no rejoin"
            await asyncio.sleep(0.01)
        assert "n2" in bus.members and "b1" in bus.presence["n2"]
    finally:
        await stop(n1, n2)


async def test_the_backend_refuses_sends_before_it_joined() -> None:
    host = FakeHost()
    host.cluster = MemoryCluster(MemoryBus(), "n1")
    with pytest.raises(ClusterError):
        await host.cluster.send_to_pair(("a", "qq"), "m1", b"{}")


def test_cluster_error_and_the_seam_import_without_redis_installed() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if redis-py were not installed\n"
        "from maim_message.errors import ClusterError, ConfigError\n"
        "from maim_message.backends.cluster_base import create_cluster\n"
        "from maim_message.backends.memory_bus import MemoryCluster\n"
        "from maim_message.server import create_server_config\n"
        "try:\n"
        "    create_cluster(create_server_config(cluster_backend='redis',\n"
        "                                        cluster_redis_url='redis://x'))\n"
        "except ConfigError as exc:\n"
        "    print('refused:', 'maim_message[cluster]' in str(exc))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused: True"
