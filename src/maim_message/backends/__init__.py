"""Storage backends: the durable SQLite outbox (cluster backends come later)."""
