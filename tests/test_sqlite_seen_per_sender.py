"""The durable dedupe record (the sqlite ``seen`` table) is bounded per sender, as the
in-memory window is: one sender's burst of fresh ids never evicts another's records."""

from __future__ import annotations

from pathlib import Path

from maim_message.backends.sqlite_outbox import SqliteOutboxStore


def _ids(store: SqliteOutboxStore, user: str) -> list:
    return [m for u, _p, m in store.load_seen(0.0) if u == user]


def test_a_burst_of_one_sender_keeps_every_other_senders_records(tmp_path: Path) -> None:
    store = SqliteOutboxStore(str(tmp_path / "o.sqlite3"), max_seen=20)
    for n in range(10):
        store.mark_seen(("adapter", "qq", f"a-{n}"), 100.0 + n)
    for n in range(2_000):  # a flood of fresh ids from another sender
        store.mark_seen(("flood", "qq", f"f-{n}"), 200.0 + n)
    store.commit()
    assert _ids(store, "adapter") == [f"a-{n}" for n in range(10)]
    flood = _ids(store, "flood")
    assert 20 <= len(flood) <= 22 and flood[-1] == "f-1999"  # its newest, bounded
    store.close()


def test_over_the_total_only_senders_over_their_share_lose_ids(tmp_path: Path) -> None:
    store = SqliteOutboxStore(str(tmp_path / "o.sqlite3"), max_seen=100, max_seen_total=120)
    for n in range(30):
        store.mark_seen(("small", "qq", f"s-{n}"), 1.0)
    for n in range(500):
        store.mark_seen(("big", "qq", f"b-{n}"), 2.0)
    store.commit()
    assert len(_ids(store, "small")) == 30  # under its share (60 of 120): untouched
    big = _ids(store, "big")
    assert len(big) <= 100 and big[-1] == "b-499"
    assert len(store.load_seen(0.0)) <= 120 + 10  # the total is checked every 10 marks
    store.close()


def test_records_survive_a_reopen_per_sender(tmp_path: Path) -> None:
    db = str(tmp_path / "o.sqlite3")
    store = SqliteOutboxStore(db, max_seen=5)
    store.mark_seen(("quiet", "qq", "q-1"), 1.0)
    for n in range(50):
        store.mark_seen(("loud", "qq", f"l-{n}"), 2.0)
    store.close()
    reopened = SqliteOutboxStore(db, max_seen=5)
    for n in range(50, 100):
        reopened.mark_seen(("loud", "qq", f"l-{n}"), 3.0)
    reopened.commit()
    assert _ids(reopened, "quiet") == ["q-1"]
    assert len(_ids(reopened, "loud")) <= 6
    reopened.close()
