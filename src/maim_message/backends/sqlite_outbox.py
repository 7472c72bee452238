"""SQLite mirror of the outbox (stdlib sqlite3, WAL): a hub restart loses nothing accepted.

Writes are synchronous on the event loop thread and grouped: ``add``/``remove``/``mark_seen``
open a transaction, and :meth:`commit` (called by the delivery layer once per event-loop
turn, before any ack or forward that depends on them leaves the process) ends it. With
WAL and synchronous=NORMAL a crash of the process (not of the machine) loses nothing that
was committed.

Besides the queued messages it keeps the ids of received frames whose handling is
committed (``seen``), so that after a crash a client's re-send of a frame the dead
process had already forwarded is recognised and not forwarded twice. Like the in-memory
window (``core.dedupe``) it is bounded per sender: each (user, platform) keeps its newest
``max_seen`` ids, and when all senders together hold more than four times that, only
senders over their fair share lose their oldest ids; one sender's burst never evicts
another's records.
"""

from __future__ import annotations

import sqlite3
from typing import Dict, Iterable, List, Optional, Tuple

from ..core.outbox import OutboxEntry, Pair

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    user_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    seq INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    only_uuid TEXT,
    PRIMARY KEY (user_id, platform, msg_id)
);
CREATE INDEX IF NOT EXISTS outbox_pair_seq ON outbox (user_id, platform, seq);
CREATE TABLE IF NOT EXISTS seen (
    user_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (user_id, platform, msg_id)
);
"""

SeenKey = Tuple[str, str, str]  # (sender user, sender platform, msg_id)


class SqliteOutboxStore:
    def __init__(self, path: str, max_seen: int = 100_000,
                 max_seen_total: Optional[int] = None) -> None:
        self.path = path
        self.max_seen = max(1, max_seen)
        self.max_seen_total = max(self.max_seen, max_seen_total if max_seen_total is not None
                                  else 4 * self.max_seen)
        self._seen_added: Dict[Tuple[str, str], int] = {}  # per sender, since its last trim
        self._marks = 0  # marks since the total was last checked
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "only_uuid" not in columns:  # a file written by an older version
            self._db.execute("ALTER TABLE outbox ADD COLUMN only_uuid TEXT")

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN")

    @property
    def dirty(self) -> bool:
        """Writes not committed yet."""
        return self._db.in_transaction

    def commit(self) -> None:
        """End the group's transaction. When that fails (disk full, read-only file, locked)
        the transaction is rolled back, so nothing of it is on disk, and the error is
        raised: the caller treats the group as not stored."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self.rollback()
            raise

    def rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite may have rolled it back itself already
                pass

    # -- messages -----------------------------------------------------------------------

    def load(self) -> Iterable[Tuple[str, str, int, str, bytes, float]]:
        rows = self._db.execute(
            "SELECT user_id, platform, seq, msg_id, payload, created FROM outbox "
            "ORDER BY user_id, platform, seq"
        ).fetchall()
        return [(u, p, int(s), m, bytes(b), float(c)) for u, p, s, m, b, c in rows]

    def add(self, pair: Pair, entry: OutboxEntry) -> None:
        self._begin()
        self._db.execute(
            "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pair[0], pair[1], entry.seq, entry.msg_id, entry.payload, entry.created,
             entry.only),
        )

    def load_targets(self) -> Dict[Tuple[str, str, str], str]:
        """Entries addressed to one connection of their pair: (user, platform, msg_id) ->
        that connection's uuid (the hub's traffic between connections of one pair)."""
        rows = self._db.execute(
            "SELECT user_id, platform, msg_id, only_uuid FROM outbox WHERE only_uuid IS NOT NULL"
        ).fetchall()
        return {(str(u), str(p), str(m)): str(o) for u, p, m, o in rows}

    def remove(self, pair: Pair, msg_ids: List[str], acked: bool = True) -> None:
        self._begin()
        self._db.executemany(
            "DELETE FROM outbox WHERE user_id = ? AND platform = ? AND msg_id = ?",
            [(pair[0], pair[1], m) for m in msg_ids],
        )

    # -- received frames already handled --------------------------------------------------

    def mark_seen(self, key: SeenKey, at: float) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?)", (*key, at))
        every = max(1, self.max_seen // 10)  # trims are amortised over many marks
        sender = (key[0], key[1])
        added = self._seen_added.get(sender, 0) + 1
        if added >= every:
            self._seen_added.pop(sender, None)
            self._trim_sender(sender, self.max_seen)
        else:
            if len(self._seen_added) >= 10_000:  # bounded however many senders come and go
                self._seen_added.clear()
            self._seen_added[sender] = added
        self._marks += 1
        if self._marks >= every:
            self._marks = 0
            total = self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
            if total > self.max_seen_total:
                self._trim_over_share()

    def _trim_sender(self, sender: Tuple[str, str], keep: int) -> None:
        """Keep the sender's newest ``keep`` ids (rowids grow with each insert)."""
        self._db.execute(
            "DELETE FROM seen WHERE user_id = ? AND platform = ? AND rowid <= ("
            "SELECT rowid FROM seen WHERE user_id = ? AND platform = ? "
            "ORDER BY rowid DESC LIMIT 1 OFFSET ?)", (*sender, *sender, keep))

    def _trim_over_share(self) -> None:
        """Over the total bound: senders holding more than an equal share of it lose
        their oldest ids down to that share; the others keep theirs."""
        counts = self._db.execute(
            "SELECT user_id, platform, COUNT(*) FROM seen GROUP BY user_id, platform"
        ).fetchall()
        share = max(1, self.max_seen_total // max(1, len(counts)))
        for user, platform, count in counts:
            if count > share:
                self._trim_sender((user, platform), share)

    def forget_seen(self, key: SeenKey) -> None:
        """The frame was not handled after all (its handling failed): not a duplicate."""
        self._begin()
        self._db.execute("DELETE FROM seen WHERE user_id = ? AND platform = ? AND msg_id = ?",
                         key)

    def load_seen(self, since: float) -> List[SeenKey]:
        """Ids of handled frames recorded at or after ``since``, oldest first."""
        rows = self._db.execute(
            "SELECT user_id, platform, msg_id FROM seen WHERE at >= ? ORDER BY at", (since,)
        ).fetchall()
        return [(str(u), str(p), str(m)) for u, p, m in rows]

    def close(self) -> None:
        self.commit()
        self._db.close()
