"""Outbox accounting and budgets (issue 14 items 3 and 4), no sockets."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from maim_message.backends.sqlite_outbox import SqliteOutboxStore
from maim_message.core.outbox import ENTRY_OVERHEAD, PAIR_OVERHEAD, Outbox


def test_bytes_count_entry_and_pair_overhead() -> None:
    outbox = Outbox()
    outbox.append(("u", "p1"), "m1", b"x")
    assert outbox.total_bytes == 1 + len("m1") + ENTRY_OVERHEAD + PAIR_OVERHEAD
    outbox.append(("u", "p1"), "m2", b"yy")
    assert outbox.total_bytes == 3 + 4 + 2 * ENTRY_OVERHEAD + PAIR_OVERHEAD
    assert outbox.user_bytes("u") == outbox.total_bytes
    outbox.ack(("u", "p1"), "m1")
    outbox.ack(("u", "p1"), "m2")
    assert outbox.total_bytes == 0 and not outbox.pairs and not outbox.users


def test_counted_bytes_are_not_below_real_memory() -> None:
    """One-character messages to many pairs: the count must cover what Python holds."""
    outbox = Outbox(max_pairs_per_user=10**9)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(5000):
            outbox.append((f"user{n % 50}", f"platform-{n}"), f"msg_{n:012d}", bytes([65 + n % 26]))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert outbox.total_bytes >= used, (outbox.total_bytes, used)


def test_pairs_per_user_are_bounded() -> None:
    outbox = Outbox(max_pairs_per_user=3)
    for n in range(3):
        assert outbox.admits(("u", f"p{n}"))
        outbox.append(("u", f"p{n}"), f"m{n}", b"x")
    assert not outbox.admits(("u", "p3"))  # a fourth platform for u
    assert outbox.admits(("u", "p0"))  # an existing one
    assert outbox.admits(("other", "p3"))  # another user
    outbox.ack(("u", "p0"), "m0")
    assert outbox.admits(("u", "p3"))


def test_one_users_flood_evicts_only_its_own_messages() -> None:
    outbox = Outbox(max_bytes=200_000, max_bytes_per_user=10**9, max_pairs_per_user=1000)
    for n in range(10):
        outbox.append(("victim", "qq"), f"v{n}", b"v" * 100)
    for n in range(500):  # each to a new platform: the case that hit the victim before
        outbox.append(("sink", f"p{n}"), f"a{n}", b"a" * 2000)
    assert outbox.depth(("victim", "qq")) == 10
    assert outbox.total_bytes <= 200_000 and outbox.evicted > 0


def test_per_user_budget_inside_the_global_one() -> None:
    outbox = Outbox(max_bytes=10**9, max_bytes_per_user=50_000)
    for n in range(100):
        outbox.append(("big", "qq"), f"b{n}", b"b" * 1000)
    outbox.append(("small", "qq"), "s", b"s" * 1000)
    assert outbox.user_bytes("big") <= 50_000
    assert outbox.depth(("big", "qq")) < 100 and outbox.depth(("small", "qq")) == 1


def test_sqlite_store_groups_writes_and_keeps_handled_ids(tmp_path: Path) -> None:
    db = str(tmp_path / "o.sqlite3")
    store = SqliteOutboxStore(db)
    outbox = Outbox(store=store)
    outbox.append(("u", "qq"), "m1", b"one")
    store.mark_seen(("adapter", "qq", "in-1"), 100.0)
    assert store.dirty
    reader = SqliteOutboxStore(db)
    assert list(reader.load()) == []  # not committed: another process sees nothing
    store.commit()
    assert not store.dirty
    assert [row[3] for row in reader.load()] == ["m1"]
    assert reader.load_seen(0.0) == [("adapter", "qq", "in-1")]
    assert reader.load_seen(200.0) == []  # older than asked for
    reader.close()
    store.close()


def test_sqlite_store_keeps_the_target_connection_of_an_entry(tmp_path: Path) -> None:
    """The hub's traffic between two connections of one pair: after a restart such an
    entry still goes to its one connection, not back to its sender."""
    db = str(tmp_path / "o.sqlite3")
    store = SqliteOutboxStore(db)
    outbox = Outbox(store=store)
    outbox.append(("u", "qq"), "to-b", b"{}", only="conn-b")
    outbox.append(("u", "qq"), "to-all", b"{}")
    store.close()
    again = Outbox(store=SqliteOutboxStore(db))
    entries = {e.msg_id: e.only for e in again.pending_after(("u", "qq"), 0)}
    assert entries == {"to-b": "conn-b", "to-all": None}
    again.close()


def test_sqlite_store_opens_a_file_of_the_previous_schema(tmp_path: Path) -> None:
    import sqlite3

    db = str(tmp_path / "old.sqlite3")
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE outbox (user_id TEXT NOT NULL, platform TEXT NOT NULL, "
                "seq INTEGER NOT NULL, msg_id TEXT NOT NULL, payload BLOB NOT NULL, "
                "created REAL NOT NULL, PRIMARY KEY (user_id, platform, msg_id))")
    old.execute("INSERT INTO outbox VALUES ('u', 'qq', 1, 'm1', x'7b7d', 1.0)")
    old.commit()
    old.close()
    outbox = Outbox(store=SqliteOutboxStore(db))
    assert [e.msg_id for e in outbox.pending_after(("u", "qq"), 0)] == ["m1"]
    outbox.append(("u", "qq"), "m2", b"{}", only="c")
    outbox.close()


async def test_an_eviction_is_logged_at_warning_once_then_per_thousand(
        caplog: pytest.LogCaptureFixture) -> None:
    """Evicted messages are lost for their receivers: the log says so (once, then every
    1,000), as delivery.md promises, without naming the receiver's key."""
    import logging

    from maim_message.server import WebSocketServer, create_server_config

    from .helpers_api import make_message

    server = WebSocketServer(create_server_config(host="127.0.0.1", port=0,
                                                  outbox_max_per_pair=10))
    await server.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="maim_message.server"):
            for n in range(1_020):
                await server.send_message(make_message(f"m{n}", "offline-user-key", "qq"))
        warned = [r.getMessage() for r in caplog.records
                  if r.levelno == logging.WARNING and "evicted" in r.getMessage()]
        assert len(warned) == 2 and "1 undelivered" in warned[0], warned
        assert "offline-user-key" not in caplog.text
        assert server.get_stats()["delivery"]["evicted"] == 1_010
    finally:
        await server.stop()
