"""Defaults defined once, every exception under MaimMessageError, 0.6.8 fields that do
nothing said so once, and the client's outbox (core/outbox) without a socket."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from typing import List

import pytest

import maim_message
from maim_message.client.config import ClientConfig
from maim_message.client.connection import SupervisedConnection
from maim_message.core.defaults import DEFAULT_LIMITS, DEFAULT_OUTBOX, MAX_MESSAGE_SIZE
from maim_message.errors import MaimMessageError
from maim_message.hub.settings import LimitSettings, OutboxSettings
from maim_message.runtime import unused_fields
from maim_message.runtime.callbacks import HandlerTasks
from maim_message.server.config import ServerConfig
from maim_message.transport.ws_server import ServerOptions


def test_every_layer_takes_its_defaults_from_core_defaults() -> None:
    server, hub, options = ServerConfig(), LimitSettings(), ServerOptions()
    for name in ("max_message_size", "handshake_timeout", "close_timeout",
                 "max_write_buffer", "send_buffer_high", "slow_consumer_timeout"):
        want = getattr(DEFAULT_LIMITS, name)
        assert getattr(server, name) == getattr(hub, name) == getattr(options, name) == want
    assert server.ping_interval == hub.ping_interval == DEFAULT_LIMITS.ping_interval
    assert ClientConfig("ws://x", "k").max_size == MAX_MESSAGE_SIZE == 104_857_600
    outbox = OutboxSettings()
    assert (server.outbox_max_per_pair, server.outbox_max_bytes, server.outbox_ttl) == (
        outbox.max_per_pair, outbox.max_bytes, outbox.ttl) == (
        DEFAULT_OUTBOX.max_per_pair, DEFAULT_OUTBOX.max_bytes, DEFAULT_OUTBOX.ttl)


def _package_exceptions() -> List[type]:
    found = []
    for info in pkgutil.walk_packages(maim_message.__path__, "maim_message."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional extras (redis, rich, ...) not installed
            continue
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("maim_message"):
                found.append(obj)
    return found


def test_every_exception_of_the_package_is_a_maim_message_error() -> None:
    found = _package_exceptions()
    assert len(found) > 5
    outside = sorted({f"{e.__module__}.{e.__qualname__}" for e in found
                      if not issubclass(e, MaimMessageError)})
    assert outside == []


def test_unused_0_6_8_fields_are_accepted_and_warned_about_once(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unused_fields, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="maim_message.config"):
        config = ServerConfig(enable_stats=False, stats_callback=print, message_cache_ttl=9)
        unused_fields.warn_unused_fields(config, unused_fields.SERVER_UNUSED)
        unused_fields.warn_unused_fields(config, unused_fields.SERVER_UNUSED)
        unused_fields.warn_unused_fields(ServerConfig(), unused_fields.SERVER_UNUSED)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # once each, and nothing for defaults
    assert any("ServerConfig.stats_callback" in line for line in lines)
    assert any("ServerConfig.message_cache_ttl" in line and "outbox_ttl" in line
               for line in lines)


# -- the client's outbox -----------------------------------------------------------------------


def _connection(**config: object) -> SupervisedConnection:
    cfg = ClientConfig("ws://127.0.0.1:1/ws", "key", **config)  # type: ignore[arg-type]
    conn = SupervisedConnection(cfg, HandlerTasks("test"), {}, "single_test")
    conn._wanted = True  # connecting (no socket): sends are kept for the connection
    return conn


async def test_client_outbox_keeps_unacked_messages_within_its_bounds() -> None:
    """Full and not connected: the new message is refused, none queued is evicted (an
    evicted unacked frame is lost if the server never got it)."""
    conn = _connection(message_cache_max_size=2)
    for i in range(2):
        assert await conn._send(b'{"n":%d}' % i, f"m{i}")
    assert not await conn._send(b'{"n":2}', "m2")
    assert conn.pending_count == 2 and conn.dropped == 0 and conn.stats["refused"] == 1
    conn._outbox.ack(("server", ""), "m0")
    assert await conn._send(b'{"n":3}', "m3")  # room again
    assert [e.msg_id for e in conn._outbox.pending_after(("server", ""), 0)] == ["m1", "m3"]


async def test_client_outbox_drops_what_outlived_message_cache_ttl_before_resending(
        monkeypatch: pytest.MonkeyPatch) -> None:
    conn = _connection(message_cache_ttl=60)
    now = [1000.0]
    monkeypatch.setattr(conn._outbox, "_clock", lambda: now[0])
    await conn._send(b"{}", "old")
    now[0] += 61
    await conn._send(b"{}", "new")
    conn._cleanup(now=True)  # what a reconnect does before resending
    assert conn.pending_count == 1 and conn.dropped == 1
