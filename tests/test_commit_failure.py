"""A failing commit of the durable outbox (disk full, read-only file, locked database).

docs/delivery.md: nothing is acked that is not stored, and the client re-sends. Before,
the commit's exception escaped a scheduled loop callback (asyncio logged it), the
forward's ``send_message`` never returned and the messages and acks of the failed group
stayed queued for the next commit. Real sockets; only the commit is made to fail.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any, Dict, List

import pytest
import websockets

from maim_message.server import WebSocketServer, create_server_config

from .helpers_api import envelope, make_message, recv_json


class FailingCommit:
    """The store's commit fails while ``failing`` is set, rolled back as SQLite does when
    a COMMIT hits a full disk."""

    def __init__(self, server: WebSocketServer) -> None:
        outbox = server.delivery.outbox
        assert outbox is not None and outbox.store is not None
        self.store: Any = outbox.store
        self.real_commit = self.store.commit
        self.store.commit = self.commit
        self.failing = True
        self.failed = 0

    def commit(self) -> None:
        if self.failing and self.store._db.in_transaction:
            self.failed += 1
            self.store._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        self.real_commit()

    def count(self, table: str) -> int:
        return int(self.store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.mark.parametrize("forward", [True, False], ids=["forwarding", "sending-nothing"])
async def test_a_failed_commit_acks_nothing_and_the_resend_is_handled(
        tmp_path: Any, forward: bool) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: List[Dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    calls: List[str] = []
    handled = asyncio.Event()
    server: WebSocketServer

    async def handler(message: Any, metadata: Dict[str, Any]) -> None:
        calls.append(message.message_info.message_id)
        try:
            if forward:
                await server.send_message(message, target_user="bot")
        finally:
            handled.set()

    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, ack="handled", on_message=handler,
        outbox_path=str(tmp_path / "outbox.db"),
        on_auth_extract_user=lambda meta: "bot" if meta["api_key"] == "kb" else "user1"))
    await server.start()
    failing = FailingCommit(server)
    base = f"ws://127.0.0.1:{server.port}/ws?platform=qq&api_key="
    try:
        async with websockets.connect(base + "kb") as bot, \
                websockets.connect(base + "k1") as ws:
            payload = make_message("one", "k1", "qq", "f-1").to_dict()
            await ws.send(envelope("f-1", payload))
            await asyncio.wait_for(handled.wait(), 5)
            for _ in range(5):  # the failed commit's aftermath runs in these turns
                await asyncio.sleep(0)
            assert failing.failed >= 1  # (un-recording the frame may fail again)
            assert server.delivery.commit_failures == failing.failed
            assert server.delivery.outbox is not None
            assert server.delivery.outbox.depth(("bot", "qq")) == 0  # taken back
            assert failing.count("outbox") == 0 and failing.count("seen") == 0
            failing.failing = False  # the disk has room again: the client re-sends
            handled.clear()
            await ws.send(envelope("f-1", payload))
            ack = await recv_json(ws)  # the only answer: nothing was sent for the first try
            assert ack["type"] == "sys_ack" and ack["meta"]["acked_msg_id"] == "f-1"
            assert calls == ["f-1", "f-1"]  # the re-send was handled, not a duplicate
            assert failing.count("seen") == 1
            if forward:
                got = await recv_json(bot)
                assert got["type"] == "sys_std"
                assert got["payload"]["message_info"]["message_id"] == "f-1"
                await ws.send(envelope("f-2", make_message("two", "k1", "qq", "f-2").to_dict()))
                nxt = await recv_json(bot)  # the next one is f-2: f-1 came once
                assert nxt["payload"]["message_info"]["message_id"] == "f-2", nxt
        assert loop_errors == [], loop_errors
    finally:
        loop.set_exception_handler(None)
        await server.stop()


async def test_fanouts_report_a_failed_commit_and_keep_nothing_they_claimed(tmp_path: Any) -> None:
    """broadcast_message and send_custom_message(connection_uuid=...) wait for the
    commit as send_message does: a failure raises instead of a False success."""
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, outbox_path=str(tmp_path / "outbox.db"),
        on_auth_extract_user=lambda metadata: "user1"))
    await server.start()
    failing = FailingCommit(server)
    try:
        async with websockets.connect(
                f"ws://127.0.0.1:{server.port}/ws?platform=qq&api_key=k1") as ws:
            deadline = asyncio.get_running_loop().time() + 5
            while server.get_connection_count() < 1:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            uuid = next(iter(server.get_connections()))
            with pytest.raises(sqlite3.OperationalError):
                await server.broadcast_message(make_message("B", "k1", "qq"))
            with pytest.raises(sqlite3.OperationalError):
                await server.send_custom_message("note", {"x": 1}, connection_uuid=uuid)
            assert failing.failed == 2
            failing.failing = False
            assert await server.send_message(make_message("after", "k1", "qq")) == {uuid: True}
            env = await recv_json(ws)
            assert env["type"] == "sys_std"
            assert env["payload"]["message_segment"]["data"] == "after"
    finally:
        await server.stop()
