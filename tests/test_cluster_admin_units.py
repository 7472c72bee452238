"""Admin actions through the cluster seam, on the in-memory bus (no sockets): an action
reaches every other node once, and a kept one is applied by a node that starts later."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest

from maim_message.backends.cluster_base import LocalCluster
from maim_message.backends.memory_bus import MemoryBus, MemoryCluster
from maim_message.backends.pubsub_messages import (
    AdminMessage,
    decode_batch,
    decode_message,
    encode_message,
)

from .fakes import FakeHost
from .test_cluster_seam import settle, stop


class AdminHost(FakeHost):
    """A FakeHost that records the admin actions the cluster hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: List[Tuple[str, Dict[str, str]]] = []

    def apply_admin(self, action: str, args: Dict[str, str]) -> None:
        self.applied.append((action, args))


async def node(bus: MemoryBus, name: str) -> AdminHost:
    host = AdminHost()
    host.cluster = MemoryCluster(bus, name)
    await host.cluster.start(host)
    return host


def test_the_admin_message_round_trips_and_refuses_odd_args() -> None:
    message = AdminMessage("n1", "revoke", {"key_sha256": "ab" * 32, "key": "key#1a2b3c4d"})
    assert decode_batch(encode_message(message)) == [message]
    with pytest.raises(ValueError):
        decode_message(b'{"type":"admin","origin":"n1","action":"x","args":{"a":1}}')


async def test_an_action_reaches_every_other_node_and_a_kept_one_later_nodes() -> None:
    bus = MemoryBus()
    n1, n2 = await node(bus, "n1"), await node(bus, "n2")
    late: Any = None
    try:
        revoke = {"key_sha256": "cd" * 32, "key": "key#00000001"}
        await n1.cluster.admin("revoke", revoke, durable=True)
        await n1.cluster.admin("disconnect", {"uuid": "u1", "user": ""})
        await settle(lambda: len(n2.applied) == 2)
        assert n2.applied == [("revoke", revoke), ("disconnect", {"uuid": "u1", "user": ""})]
        assert n1.applied == []  # the node that took the action applied it itself
        late = await node(bus, "n3")  # joins afterwards (or n2 restarted)
        assert late.applied == [("revoke", revoke)]  # only what is kept, before it serves
    finally:
        await stop(n1, n2, *([late] if late is not None else []))


async def test_a_single_node_has_nobody_to_tell() -> None:
    local = LocalCluster("solo")
    host = AdminHost()
    local.attach(host)
    await local.admin("revoke", {"key_sha256": "ef" * 32}, durable=True)
    assert host.applied == []
