"""Unit tests of the sans-I/O limit objects and the log redactor (no sockets, no sleeps)."""

from __future__ import annotations

import logging
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maim_message.core.identity import fingerprint
from maim_message.core.limits import (
    LIMIT_REASONS,
    FirstSeen,
    KeyConnectionCounter,
    LimitCounters,
    OriginPolicy,
    TokenBucket,
    reason_for_close_code,
)
from maim_message.core.redact import Redactor, redacting_logger
from maim_message.server import ServerConfig


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- TokenBucket --------------------------------------------------------------------------


def test_bucket_starts_full_then_refills_at_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.allow() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.1)  # one token
    assert bucket.allow() is True
    assert bucket.allow() is False
    clock.advance(100)  # never more than burst
    assert bucket.tokens == 5
    assert sum(bucket.allow() for _ in range(10)) == 5


def test_bucket_refusal_takes_nothing_and_cost_is_respected() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=3, clock=clock)
    assert bucket.allow(cost=3) is True
    assert bucket.allow(cost=1) is False
    clock.advance(0.5)
    assert bucket.allow() is False  # 0.5 token
    clock.advance(0.5)
    assert bucket.allow() is True  # the half token was kept, not lost


def test_bucket_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 1000), burst=st.integers(1, 200),
    steps=st.lists(st.floats(0, 2.0), min_size=1, max_size=300),
)
def test_bucket_never_allows_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, steps: List[float]
) -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate, burst, clock=clock)
    allowed = 0
    for dt in steps:
        clock.advance(dt)
        allowed += bucket.allow()
    assert allowed <= burst + rate * clock.now + 1e-6
    assert -1e-6 <= bucket.tokens <= burst


# -- connections per key, counters, origins, first-seen ---------------------------------


def test_key_counter_limit_release_and_forget() -> None:
    counter = KeyConnectionCounter(limit=2)
    assert counter.can_open("a") and counter.acquire("a") and counter.acquire("a")
    assert not counter.can_open("a") and not counter.acquire("a")
    assert counter.count("a") == 2 and counter.can_open("b")
    assert counter.release("a") == 1 and counter.can_open("a")
    assert counter.release("a") == 0 and len(counter) == 0  # no entry left behind
    assert counter.release("never") == 0 and len(counter) == 0
    unlimited = KeyConnectionCounter(None)
    assert all(unlimited.acquire("k") for _ in range(1000))
    with pytest.raises(ValueError):
        KeyConnectionCounter(0)


def test_limit_counters_snapshot_has_every_reason() -> None:
    counters = LimitCounters()
    assert set(counters.snapshot()) == set(LIMIT_REASONS)
    assert counters.total == 0
    counters.hit("rate")
    counters.hit("rate")
    counters.hit("custom_reason")
    snap = counters.snapshot()
    assert snap["rate"] == 2 and snap["custom_reason"] == 1 and counters["rate"] == 2
    snap["rate"] = 99
    assert counters["rate"] == 2  # a copy
    assert reason_for_close_code(1009) == "message_size"
    assert reason_for_close_code(1007) == "invalid_utf8"
    assert reason_for_close_code(1002) == "protocol_error"


def test_origin_policy() -> None:
    off = OriginPolicy(None)
    assert not off.enabled and off.allows("https://evil.example")
    policy = OriginPolicy(["https://Chat.Example.com/", "http://localhost:8080"])
    assert policy.enabled
    assert policy.allows("https://chat.example.com")
    assert policy.allows("http://localhost:8080/")
    assert not policy.allows("https://evil.example")
    assert not policy.allows("null")  # sandboxed pages / file:// send "null"
    assert not policy.allows("https://chat.example.com.evil.example")
    assert policy.allows(None) and policy.allows("")  # not a browser: not checked
    assert OriginPolicy(["*"]).allows("https://anything.example")
    assert not OriginPolicy([]).allows("https://chat.example.com")


def test_first_seen_is_bounded() -> None:
    seen = FirstSeen(max_entries=3)
    assert seen.first("a") and not seen.first("a")
    for key in "bcd":
        assert seen.first(key)
    assert len(seen) == 3
    assert seen.first("a")  # forgotten (oldest), so it counts as new again


# -- defaults that docs/security.md documents -----------------------------------------------


def test_documented_limit_defaults() -> None:
    cfg = ServerConfig()
    # 20 MB of media is ~27 MB as base64 inside JSON: well under the limit (0.6.8's value).
    assert cfg.max_message_size == 104_857_600
    assert cfg.max_message_size > 20 * 2**20 * 4 // 3 + 4096
    assert cfg.rate_limit_per_second == 5000.0 and cfg.rate_limit_burst == 100_000
    assert cfg.max_connections_per_key == 1000
    assert cfg.handshake_timeout == 10.0
    assert cfg.idle_timeout is None
    assert cfg.allowed_origins is None
    assert cfg.outbox_max_per_pair == 10_000
    assert cfg.ping_interval == 20.0 and cfg.ping_timeout == 20.0


# -- redaction ------------------------------------------------------------------------------


def test_redactor_replaces_raw_and_url_encoded_forms() -> None:
    secret = "sk/very+secret key=1"
    redact = Redactor([secret, None, "", "ab"])  # empty and very short ones are ignored
    label = fingerprint(secret)
    text = (f"GET /ws?api_key=sk%2Fvery%2Bsecret%20key%3D1 x-apikey: {secret} "
            "q=sk%2Fvery%2Bsecret+key%3D1")
    out = redact(text)
    assert secret not in out and "sk%2Fvery" not in out
    assert out.count(label) == 3
    assert redact("ab stays") == "ab stays"
    assert bool(redact) and not bool(Redactor())


def test_redacting_logger_formats_redacts_and_skips_disabled_levels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "super-secret-key-42"
    log = redacting_logger("maim_message.test_redact", [secret])
    with caplog.at_level(logging.DEBUG, logger="maim_message.test_redact"):
        log.debug("> %s: %s", "x-apikey", secret)
        log.info("path /ws?api_key=%s", secret)
        log.debug("%d bytes", 5)
        try:
            raise ValueError(f"bad uri ws://h/?api_key={secret}")
        except ValueError:
            log.error("failed", exc_info=True)
        log.warning("odd %s %s", "only one")  # bad format args must not raise
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in text
    assert text.count(fingerprint(secret)) == 3
    assert "5 bytes" in text and "Traceback" in text
    assert all(r.exc_info is None for r in caplog.records)

    calls: List[str] = []

    class Boom:
        def __str__(self) -> str:
            calls.append("formatted")
            return "x"

    with caplog.at_level(logging.WARNING, logger="maim_message.test_redact"):
        log.debug("%s", Boom())
    assert calls == []  # nothing formatted when the level is off
