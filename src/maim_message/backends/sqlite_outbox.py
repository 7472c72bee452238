"""SQLite mirror of the outbox (stdlib sqlite3, WAL): a hub restart loses nothing accepted.

Writes are synchronous on the event loop thread; with WAL and synchronous=NORMAL each
insert is a few tens of microseconds, and a crash of the process (not of the machine)
loses nothing that was committed.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, List, Tuple

from ..core.outbox import OutboxEntry, Pair

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    user_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    seq INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (user_id, platform, msg_id)
);
CREATE INDEX IF NOT EXISTS outbox_pair_seq ON outbox (user_id, platform, seq);
"""


class SqliteOutboxStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> Iterable[Tuple[str, str, int, str, bytes, float]]:
        rows = self._db.execute(
            "SELECT user_id, platform, seq, msg_id, payload, created FROM outbox "
            "ORDER BY user_id, platform, seq"
        ).fetchall()
        return [(u, p, int(s), m, bytes(b), float(c)) for u, p, s, m, b, c in rows]

    def add(self, pair: Pair, entry: OutboxEntry) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, ?)",
            (pair[0], pair[1], entry.seq, entry.msg_id, entry.payload, entry.created),
        )

    def remove(self, pair: Pair, msg_ids: List[str]) -> None:
        self._db.executemany(
            "DELETE FROM outbox WHERE user_id = ? AND platform = ? AND msg_id = ?",
            [(pair[0], pair[1], m) for m in msg_ids],
        )

    def close(self) -> None:
        self._db.close()
