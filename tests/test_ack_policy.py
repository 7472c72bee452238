"""Issue 14: the ``ack`` policy, bad envelopes never acked, closed connections freed at once."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any, AsyncIterator, Dict, List

import orjson
import pytest
import websockets

from maim_message.errors import ConfigError, DeliveryRefused
from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import envelope, make_message, recv_json
from .rawws import RawWS, frame, request


def payload(text: str) -> Dict[str, Any]:
    return make_message(text, "k1", "qq").to_dict()


class Gate:
    """An on_message handler that waits for a go-ahead (a handler awaiting I/O)."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.calls: List[str] = []
        self.refuse = False

    async def __call__(self, message: Any, metadata: Dict[str, Any]) -> None:
        self.calls.append(message.message_segment.data)
        await self.go.wait()
        if self.refuse:
            raise DeliveryRefused("no room for it", field="message_dim.platform")


async def start(ack: str, handler: Any) -> WebSocketServer:
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, ack=ack, on_message=handler,
        on_auth_extract_user=lambda meta: "user1"))
    await server.start()
    return server


@pytest.fixture
async def gate() -> AsyncIterator[Gate]:
    yield Gate()


async def no_frame(ws: Any, wait: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return True
    return False


async def test_receipt_acks_before_the_handler_finishes(gate: Gate) -> None:
    server = await start("receipt", gate)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?api_key=k1") as ws:
            await ws.send(envelope("r-1", payload("one")))
            ack = await recv_json(ws)  # while the handler still waits
            assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "r-1"
            assert gate.calls == ["one"] and not gate.go.is_set()
            gate.go.set()
    finally:
        await server.stop()


async def test_handled_acks_once_the_handler_returned(gate: Gate) -> None:
    server = await start("handled", gate)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?api_key=k1") as ws:
            await ws.send(envelope("h-1", payload("one")))
            await ws.send(envelope("h-1", payload("one")))  # a re-send while in flight
            assert await no_frame(ws), "acked before the handler finished"
            assert gate.calls == ["one"], "the re-send ran the handler again"
            gate.go.set()
            ack = await recv_json(ws)  # one ack answers both copies on this connection
            assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "h-1"
            await ws.send(envelope("h-1", payload("one")))  # after: a duplicate, acked
            assert (await recv_json(ws))["type"] == "sys_ack"
            assert gate.calls == ["one"]
            assert server.get_stats()["duplicate_messages_ignored"] == 2
    finally:
        await server.stop()


async def test_handled_refusal_is_answered_not_acked(gate: Gate) -> None:
    gate.refuse = True
    gate.go.set()
    server = await start("handled", gate)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?api_key=k1") as ws:
            await ws.send(envelope("x-1", payload("one")))
            error = await recv_json(ws)
            assert error["type"] == "sys_error" and error["meta"]["ref_msg_id"] == "x-1"
            assert error["payload"]["field"] == "message_dim.platform"
            assert await no_frame(ws), "a refused frame was acked"
            await ws.send(envelope("x-1", payload("one")))  # refused: tried again
            assert (await recv_json(ws))["type"] == "sys_error"
            assert gate.calls == ["one", "one"]
    finally:
        await server.stop()


def test_unknown_ack_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ack"):
        WebSocketServer(create_server_config(ack="whenever"))
    assert create_server_config().ack == "receipt"  # the spec's behaviour (wire §1.6)


@pytest.mark.parametrize("ack", ["receipt", "handled"])
async def test_wrong_message_dim_types_get_sys_error_not_ack(
    ack: str, caplog: pytest.LogCaptureFixture,
) -> None:
    calls: List[Any] = []
    server = await start(ack, lambda message, meta: calls.append(message))
    bad = payload("x")
    bad["message_dim"]["api_key"] = ["not", "a", "string"]
    try:
        with caplog.at_level(logging.DEBUG, logger="maim_message"):
            async with websockets.connect(
                    f"ws://127.0.0.1:{server.port}/ws?api_key=k1") as ws:
                for n in range(200):
                    await ws.send(envelope(f"b-{n}", bad))
                replies = [await recv_json(ws) for _ in range(200)]
                await ws.send(envelope("good", payload("fine")))
                assert (await recv_json(ws))["meta"]["acked_msg_id"] == "good"
        assert {r["type"] for r in replies} == {"sys_error"}, "a dropped frame was acked"
        assert replies[0]["payload"]["field"] == "payload.message_dim.api_key"
        assert [r["meta"]["ref_msg_id"] for r in replies] == [f"b-{n}" for n in range(200)]
        assert [m.message_segment.data for m in calls] == ["fine"]
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per peer+reason
        assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    finally:
        await server.stop()


def _alive(type_name: str) -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == type_name)


async def test_closed_connection_is_freed_without_a_full_gc() -> None:
    server = await start("receipt", lambda message, meta: None)
    gc.collect()
    gc.disable()
    try:
        before = _alive("WSConnection")
        ws = await RawWS.open(server.port, request(query={"api_key": "k1", "platform": "qq"}))
        assert ws.status == 101
        # half of a 4 MB message: the parser holds it until the message completes
        ws.send(frame(0x1, b"x" * (4 * 1024 * 1024), fin=False))
        await ws.writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not server.peers and loop.time() < deadline:
            await asyncio.sleep(0.01)
        peer = next(iter(server.peers.values()))
        peer_ref = weakref.ref(peer)
        del peer
        await asyncio.sleep(0.2)  # let the server read the fragment
        ws.writer.transport.abort()  # the client vanishes mid-message
        while server.peers and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the transport's connection_lost callback
        assert not server.peers
        assert peer_ref() is None, "the peer (and its connection) wait for a full GC"
        assert _alive("WSConnection") == before
    finally:
        gc.enable()
        await server.stop()


async def test_receipt_frames_without_msg_id_are_handled_not_acked() -> None:
    calls: List[Any] = []
    server = await start("handled", lambda message, meta: calls.append(message))
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?api_key=k1") as ws:
            await ws.send(orjson.dumps(payload("bare")).decode())  # 0.6.8's bare payload
            await ws.send(envelope("after", payload("after")))
            assert (await recv_json(ws))["meta"]["acked_msg_id"] == "after"
        assert [m.message_segment.data for m in calls] == ["bare", "after"]
    finally:
        await server.stop()


# -- ack="handled": a frame that was not handled is never acked ------------------------------


class FailingStore:
    """Makes the durable outbox's ``add`` fail the way a full disk or a locked db does."""

    def __init__(self, server: WebSocketServer) -> None:
        outbox = server.delivery.outbox
        assert outbox is not None and outbox.store is not None
        self.store: Any = outbox.store
        self.real_add = self.store.add
        self.store.add = self.add
        self.failing = True

    def add(self, pair: Any, entry: Any) -> None:
        if self.failing:
            import sqlite3

            raise sqlite3.OperationalError("database or disk is full")
        self.real_add(pair, entry)

    def rows(self) -> int:
        self.store.commit()
        return int(self.store._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def start_forwarder(tmp_path: Any, swallow: bool = False) -> WebSocketServer:
    """ack="handled", durable outbox, a handler forwarding to an offline user."""
    calls: List[str] = []
    server: WebSocketServer

    async def forward(message: Any, metadata: Dict[str, Any]) -> None:
        calls.append(message.message_info.message_id)
        try:
            await server.send_message(message, target_user="offline-user")
        except Exception:
            if not swallow:
                raise

    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, ack="handled", on_message=forward,
        outbox_path=str(tmp_path / "outbox.db"), on_auth_extract_user=lambda meta: "user1"))
    server.calls = calls  # type: ignore[attr-defined]
    await server.start()
    return server


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed-by-handler"])
async def test_handled_frame_whose_forward_was_not_stored_is_not_acked_and_resent(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, swallow: bool) -> None:
    server = await start_forwarder(tmp_path, swallow)
    failing = FailingStore(server)
    try:
        with caplog.at_level(logging.DEBUG, logger="maim_message"):
            async with websockets.connect(
                    f"ws://127.0.0.1:{server.port}/ws?api_key=k1&platform=qq") as ws:
                for _ in range(3):
                    await ws.send(envelope("f-1", payload("one")))
                    assert await no_frame(ws), "a frame whose forward was lost was answered"
                # each copy was tried again (not a duplicate of a frame never handled)
                assert len(server.calls) == 3  # type: ignore[attr-defined]
                assert failing.rows() == 0
                failing.failing = False  # the disk has room again: the client's re-send
                await ws.send(envelope("f-1", payload("one")))
                ack = await recv_json(ws)
                assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "f-1"
                assert failing.rows() == 1
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING
                    and "the store failed" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per peer
        assert warnings[0].exc_info is None
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await server.stop()


async def test_handled_frame_whose_handler_raised_gets_sys_error_not_ack(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: List[str] = []

    async def buggy(message: Any, metadata: Dict[str, Any]) -> None:
        calls.append(message.message_info.message_id)
        raise KeyError("a bug in the handler")

    server = await start("handled", buggy)
    try:
        with caplog.at_level(logging.DEBUG, logger="maim_message"):
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?api_key=k1") as ws:
                for _ in range(3):
                    await ws.send(envelope("b-1", payload("one")))
                    error = await recv_json(ws)
                    assert error["type"] == "sys_error", error
                    assert error["meta"]["ref_msg_id"] == "b-1"
                    assert "a bug in the handler" not in orjson.dumps(error).decode()
                assert await no_frame(ws), "a frame whose handler raised was acked"
        assert len(calls) == 3  # not remembered as handled
        logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(logged) == 1 and logged[0].exc_info is not None  # one traceback
        assert server.get_stats()["handler_errors"] == 3
    finally:
        await server.stop()


async def test_another_users_burst_of_fresh_ids_does_not_evict_my_dedupe_ids() -> None:
    """One sender's window per (user, platform): a re-send after the burst is a duplicate."""
    handled: List[str] = []

    async def record(message: Any, metadata: Dict[str, Any]) -> None:
        handled.append(metadata["user_id"])

    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, dedupe_window=50, on_message=record,
        on_auth_extract_user=lambda meta: {"k1": "u1", "k2": "u2"}.get(meta.get("api_key"))))
    await server.start()
    base = f"ws://127.0.0.1:{server.port}/ws"
    try:
        async with websockets.connect(f"{base}?api_key=k1&platform=qq") as victim:
            await victim.send(envelope("victim-1", payload("hello")))
            assert (await recv_json(victim))["type"] == "sys_ack"
        async with websockets.connect(f"{base}?api_key=k2&platform=qq") as flooder:
            for n in range(200):
                await flooder.send(envelope(f"flood-{n}", payload("x")))
            for _ in range(200):
                assert (await recv_json(flooder))["type"] == "sys_ack"
        async with websockets.connect(f"{base}?api_key=k1&platform=qq") as victim:
            await victim.send(envelope("victim-1", payload("hello")))  # the re-send
            assert (await recv_json(victim))["type"] == "sys_ack"
        assert handled.count("u1") == 1, "u1's re-send was handled twice"
        assert server.get_stats()["duplicate_messages_ignored"] == 1
    finally:
        await server.stop()
