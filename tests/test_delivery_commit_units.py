"""Delivery's group commit and backpressure without sockets (issue 14 items 1 and 8)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import List

import pytest

from maim_message.backends.sqlite_outbox import SqliteOutboxStore
from maim_message.errors import DeliveryRefused
from maim_message.server.acks import CURRENT_RECEIPT, Receipt

from .fakes import FakeHost, conn_of, make_peer


def test_without_outbox_a_connection_over_its_mark_gets_nothing() -> None:
    host = FakeHost(enable_message_cache=False)
    peer = make_peer("c1", "u")
    host.peers["c1"] = peer
    conn_of(peer).is_writable = False
    assert host.delivery.to_pair(("u", "qq"), ["c1"], "m1", b"{}") == {"c1": False}
    assert conn_of(peer).frames == []
    conn_of(peer).is_writable = True
    assert host.delivery.to_pair(("u", "qq"), ["c1"], "m2", b"{}") == {"c1": True}


async def test_durable_writes_wait_for_one_commit_then_acks(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite3"
    host = FakeHost(outbox_path=str(db))
    peer = make_peer("c1", "u")
    host.peers["c1"] = peer
    delivery = host.delivery
    order: List[str] = []
    receipt = Receipt(("adapter", "qq", "in-1"))
    token = CURRENT_RECEIPT.set(receipt)
    try:
        for n in range(16):  # one read slice of forwards
            delivery.to_pair(("u", "qq"), ["c1"], f"m{n}", b"{}")
    finally:
        CURRENT_RECEIPT.reset(token)
    delivery.after_commit(lambda: order.append(f"ack after {len(conn_of(peer).frames)}"))
    assert conn_of(peer).frames == [], "written before it was committed"
    early = SqliteOutboxStore(str(db))
    assert list(early.load()) == [], "visible to a restart before the commit"
    early.close()
    delivery.peer_opened(peer)  # a reconnect's flush must not pass the commit either
    assert conn_of(peer).frames == []
    await delivery.committed()
    assert len(conn_of(peer).frames) == 16
    assert order == ["ack after 16"]
    reader = SqliteOutboxStore(str(db))
    assert len(list(reader.load())) == 16
    assert reader.load_seen(0.0) == [("adapter", "qq", "in-1")]  # with the forwards
    reader.close()
    delivery.close()


async def test_pair_bound_refuses_unserved_platforms() -> None:
    host = FakeHost(outbox_max_pairs_per_user=2)
    for n in range(2):
        host.delivery.to_pair(("bot", f"p{n}"), [], f"m{n}", b"{}")
    with pytest.raises(DeliveryRefused) as refused:
        host.delivery.to_pair(("bot", "p2"), [], "m2", b"{}")
    assert refused.value.field == "message_dim.platform"
    peer = make_peer("live", "bot", platform="p3")
    host.peers["live"] = peer  # a live connection is always served
    assert host.delivery.to_pair(("bot", "p3"), ["live"], "m3", b"{}") == {"live": True}
    await asyncio.sleep(0)


@pytest.mark.parametrize("broadcast", [False, True], ids=["to_pair", "to_connections"])
async def test_a_connection_opened_before_the_commit_gets_what_was_queued_for_its_pair(
        tmp_path: Path, broadcast: bool) -> None:
    host = FakeHost(outbox_path=str(tmp_path / "o.sqlite3"))
    delivery = host.delivery
    if broadcast:  # an old connection of the pair is live when the broadcast is queued
        old = make_peer("c1", "u")
        host.peers["c1"] = old
        delivery.peer_opened(old)
        delivery.to_connections(["c1"], "m1", b'{"msg_id":"m1"}')
    else:  # nobody connected: queued, commit scheduled
        delivery.to_pair(("u", "qq"), [], "m1", b'{"msg_id":"m1"}')
    new = make_peer("c2", "u")  # connects in the same loop turn, before the commit
    host.peers["c2"] = new
    delivery.peer_opened(new)
    assert conn_of(new).frames == [], "written before it was committed"
    await delivery.committed()
    assert [bytes(f).endswith(b'{"msg_id":"m1"}') for f in conn_of(new).frames] == [True]
    if broadcast:
        assert len(conn_of(old).frames) == 1
    delivery.close()
