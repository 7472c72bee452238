"""WebSocketClient against our server: both directions, custom messages, reconnect, exit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from typing import Any, Dict, List

import pytest

from maim_message.client import WebSocketClient, create_client_config
from maim_message.server import WebSocketServer, create_server_config

from .conftest import ROOT, free_port
from .helpers_api import Inbox, make_message


def server_config(port: int, inbox: Inbox, **kw: Any) -> Any:
    return create_server_config(
        host="127.0.0.1", port=port,
        on_auth=lambda m: m["api_key"].startswith("good"),
        on_auth_extract_user=lambda m: "u-" + m["api_key"],
        on_message=inbox, **kw,
    )



def sys_ack(msg_id: str) -> str:
    """The server's ack of ``msg_id`` as a raw test server writes it."""
    return json.dumps({"ver": 1, "msg_id": "ack-" + msg_id, "type": "sys_ack",
                       "meta": {"uuid": "u", "acked_msg_id": msg_id, "timestamp": 0},
                       "payload": {"status": "received"}})

async def test_messages_and_custom_messages_both_ways() -> None:
    inbox, client_inbox = Inbox(), Inbox()
    customs: asyncio.Queue[Any] = asyncio.Queue()
    events: List[Any] = []
    server = WebSocketServer(server_config(0, inbox))
    server.register_custom_handler("client_heartbeat", lambda env, meta: customs.put_nowait(
        ("server", env["payload"], meta["user_id"])))
    await server.start()
    config = create_client_config(
        f"ws://127.0.0.1:{server.port}/ws", "good1", platform="qq", on_message=client_inbox,
        on_connect=lambda uuid, cfg: events.append(("connect", uuid)),
        on_disconnect=lambda uuid, err: events.append(("disconnect", uuid, err)),
    )

    async def two_args(data: Dict[str, Any], metadata: Dict[str, Any]) -> None:
        customs.put_nowait(("client2", data, metadata["sender_user"]))

    config.register_custom_handler("server_notification", two_args)
    client = WebSocketClient(config)
    client.register_custom_handler("one_arg", lambda data: customs.put_nowait(("client1", data)))
    try:
        await client.start()
        assert await client.connect() is True
        assert client.is_connected()
        assert await client.send_message(make_message("up", "good1", "qq")) is True
        message, meta = await inbox.next()
        assert message.message_segment.data == "up" and meta["user_id"] == "u-good1"
        assert await client.send_custom_message("client_heartbeat", {"status": "active"})
        assert await asyncio.wait_for(customs.get(), 5) == (
            "server", {"status": "active"}, "u-good1")

        result = await server.send_message(make_message("down", "good1", "qq"))
        assert list(result.values()) == [True]
        message, meta = await client_inbox.next()
        assert message.message_segment.data == "down"
        assert meta["sender_user"] == "server" and meta["target_user"] == "u-good1"

        await server.send_custom_message("server_notification", {"type": "update"},
                                         target_user="u-good1")
        assert await asyncio.wait_for(customs.get(), 5) == ("client2", {"type": "update"},
                                                            "server")
        await server.send_custom_message("custom_one_arg", {"n": 1}, target_platform="qq")
        assert await asyncio.wait_for(customs.get(), 5) == ("client1", {"n": 1})
        stats = client.get_stats()
        assert stats["messages_sent"] == 2 and stats["connected"] is True
        assert "good1" not in str(stats)
    finally:
        await client.stop()
        await server.stop()
    assert events[0][0] == "connect" and events[0][1] == client.get_connection_uuid()
    assert events[-1][0] == "disconnect"


async def test_refused_key_returns_false_and_does_not_retry() -> None:
    server = WebSocketServer(server_config(0, Inbox()))
    await server.start()
    client = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{server.port}/ws", "bad-key", reconnect_delay=0.05))
    try:
        await client.start()
        assert await client.connect() is False
        assert not client.is_connected()
        assert "403" in (client.get_last_error() or "")
        await asyncio.sleep(0.2)
        assert client.get_stats()["connect_attempts"] == 1
    finally:
        await client.stop()
        await server.stop()


async def test_reconnects_after_server_restart_on_same_port() -> None:
    port = free_port()
    inbox = Inbox()
    server = WebSocketServer(server_config(port, inbox))
    await server.start()
    connects: asyncio.Queue[str] = asyncio.Queue()
    client = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{port}/ws", "good2", platform="qq", reconnect_delay=0.05,
        max_reconnect_delay=0.2, max_reconnect_attempts=0,
        on_connect=lambda uuid, cfg: connects.put_nowait(uuid)))
    try:
        assert await client.connect()
        first_uuid = await asyncio.wait_for(connects.get(), 5)
        await server.stop()
        server = WebSocketServer(server_config(port, inbox))
        await server.start()
        assert await asyncio.wait_for(connects.get(), 10) == first_uuid
        assert await client.send_message(make_message("after restart", "good2", "qq"))
        message, _ = await inbox.next()
        assert message.message_segment.data == "after restart"
        assert client.get_stats()["reconnect_attempts"] >= 1
    finally:
        await client.stop()
        await server.stop()


async def test_connect_to_nothing_returns_false_and_gives_up() -> None:
    port = free_port()
    client = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{port}/ws", "good", reconnect_delay=0.01, max_reconnect_delay=0.02,
        max_reconnect_attempts=2))
    disconnected = asyncio.Event()
    client.config.on_disconnect = lambda uuid, err: disconnected.set()
    assert await client.connect() is False
    await asyncio.wait_for(disconnected.wait(), 5)
    assert client.get_stats()["connect_attempts"] == 3
    await client.stop()


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        WebSocketClient(create_client_config("http://x", "k"))
    with pytest.raises(ValueError):
        create_client_config("ws://x/ws", "")


def test_script_exits_on_its_own_after_stop(tmp_path: Any) -> None:
    script = tmp_path / "flow.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT / 'src')!r})
        from maim_message.server import WebSocketServer, create_server_config
        from maim_message.client import WebSocketClient, create_client_config

        async def main():
            server = WebSocketServer(create_server_config(host="127.0.0.1", port=0))
            await server.start()
            client = WebSocketClient(create_client_config(
                f"ws://127.0.0.1:{{server.port}}/ws", "k"))
            await client.start()
            assert await client.connect()
            await client.disconnect()
            await client.stop()
            await server.stop()
            print("done")

        asyncio.run(main())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr


async def test_bad_frames_from_the_server_do_not_kill_the_client() -> None:
    from websockets.asyncio.server import serve

    good = make_message("still fine", "k", "qq").to_dict()

    async def handler(ws: Any) -> None:
        await ws.send('{"type": "sys_std", "msg_id": ["not", "hashable"], "payload": {}}')
        await ws.send('{"type": "sys_std", "msg_id": {"x": 1}}')
        await ws.send("[1, 2, 3]")
        await ws.send('{"ver": 1, "msg_id": "m-ok", "type": "sys_std", "meta": {}, '
                      '"payload": ' + __import__("json").dumps(good) + "}")
        await ws.wait_closed()

    inbox = Inbox()
    async with serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{port}/ws", "k", on_message=inbox))
        try:
            assert await client.connect()
            message, _ = await inbox.next()
            assert message.message_segment.data == "still fine"
            assert client.is_connected()
        finally:
            await client.stop()


async def test_a_frame_the_server_refused_is_not_resent_after_a_reconnect() -> None:
    """``sys_error`` naming a frame is final: the frame leaves the resend queue."""
    import json

    from websockets.asyncio.server import serve

    seen: List[str] = []
    second = asyncio.Event()

    async def handler(ws: Any) -> None:
        if seen:
            second.set()  # the reconnect: anything re-sent arrives now
            try:
                async for raw in ws:
                    env = json.loads(raw)
                    if env.get("type") == "sys_std":
                        seen.append(env["msg_id"])
            except Exception:
                pass
            return
        raw = await ws.recv()
        env = json.loads(raw)
        seen.append(env["msg_id"])
        await ws.send(json.dumps({"ver": 1, "type": "sys_error",
                                  "meta": {"ref_msg_id": env["msg_id"]},
                                  "payload": {"code": "bad_frame", "reason": "no"}}))
        refused_seen.set()
        await refused_done.wait()
        await ws.close()

    refused_seen, refused_done = asyncio.Event(), asyncio.Event()
    async with serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{port}/ws", "k", reconnect_delay=0.05))
        try:
            assert await client.connect()
            assert await client.send_message(make_message("refused", "k", "qq"))
            await asyncio.wait_for(refused_seen.wait(), 5)
            for _ in range(500):  # bounded: until the client has read the sys_error
                if client.get_stats()["messages_refused"] == 1:
                    break
                await asyncio.sleep(0.01)
            assert client.get_stats()["messages_refused"] == 1
            refused_done.set()
            await asyncio.wait_for(second.wait(), 10)
            await client.send_message(make_message("after", "k", "qq"))
            for _ in range(500):  # bounded: until the new message arrived
                if len(seen) >= 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            refused_done.set()
            await client.stop()
    assert len(seen) == 2, seen  # the refused frame once, then only the new one
    assert seen[0] != seen[1]


async def test_a_frame_the_server_did_not_ack_is_sent_again_on_the_same_connection() -> None:
    """A server that could not store a frame withholds its ack (our hub while its Redis is
    away): the client writes it again after ``resend_interval``, without a reconnect."""
    import json

    from websockets.asyncio.server import serve

    arrivals: List[str] = []
    connections: List[Any] = []

    async def handler(ws: Any) -> None:
        connections.append(ws)
        async for raw in ws:
            env = json.loads(raw)
            if env.get("type") != "sys_std":
                continue
            arrivals.append(env["msg_id"])
            if arrivals.count(env["msg_id"]) < 2:
                continue  # the first arrival is not acked
            await ws.send(sys_ack(env["msg_id"]))

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{port}/ws", "k", resend_interval=0.4))
        try:
            assert await client.connect()
            assert await client.send_message(make_message("stored later", "k", "qq"))
            for _ in range(500):  # bounded: until the re-send was acked
                if client.get_stats()["pending_messages"] == 0:
                    break
                await asyncio.sleep(0.01)
            stats = client.get_stats()
            assert stats["pending_messages"] == 0 and stats["messages_resent"] == 1
            assert stats["reconnect_attempts"] == 0 and len(connections) == 1
            assert len(arrivals) == 2 and arrivals[0] == arrivals[1]
            await asyncio.sleep(1.0)  # acked: never sent again
            assert len(arrivals) == 2
        finally:
            await client.stop()


async def test_a_message_over_the_limit_does_not_block_the_ones_behind_it() -> None:
    """Over the server's limit: the server closes the connection (1009, naming its
    limit); the client drops that one message instead of sending it first on every
    reconnect, and the next ones go on."""
    inbox = Inbox()
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=0, max_message_size=20_000, on_message=inbox))
    await server.start()
    client = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{server.port}/ws", "k", reconnect_delay=0.05))
    try:
        assert await client.connect()
        assert await client.send_message(make_message("y" * 50_000, "k", "qq"))
        assert await client.send_message(make_message("after the big one", "k", "qq"))
        message, _ = await inbox.next(10)
        assert message.message_segment.data == "after the big one"
        stats = client.get_stats()
        assert stats["messages_refused"] == 1 and stats["pending_messages"] == 0
        assert stats["network"]["total_connections"] <= 2  # one close, one reconnect
    finally:
        await client.stop()
        await server.stop()


async def test_a_message_its_receiver_keeps_refusing_as_too_big_is_given_up(
        caplog: pytest.LogCaptureFixture) -> None:
    """The receiver's max_size is below a message for it: it closes (1009) each time it is
    sent, and the message after it waited behind it. The server sends it again on the next
    connections and gives it up after three closes in a row over it (WARNING), so the next
    message arrives; the receiver keeps its own outgoing messages, even ones above its
    max_size (a limit on what it receives)."""
    inbox = Inbox()
    server = WebSocketServer(create_server_config(host="127.0.0.1", port=0,
                                                  on_message=inbox))
    await check_too_big_given_up(server, inbox, caplog)


async def check_too_big_given_up(server: WebSocketServer, inbox: Inbox,
                                 caplog: pytest.LogCaptureFixture) -> None:
    """(Also run in cluster mode: tests/test_cluster_too_big.py.)"""
    import logging

    received = Inbox()
    await server.start()
    receiver = WebSocketClient(create_client_config(
        f"ws://127.0.0.1:{server.port}/ws", "bob", platform="qq",
        reconnect_delay=0.05, max_size=20_000, on_message=received))
    try:
        assert await receiver.connect()
        assert await receiver.send_message(make_message("x" * 30_000, "bob", "qq"))
        message, _ = await inbox.next(10)  # its own limit is on what it receives
        assert len(message.message_segment.data) == 30_000
        with caplog.at_level(logging.DEBUG, logger="maim_message.server"):
            await server.send_message(make_message("z" * 50_000, "bob", "qq"))
            await server.send_message(make_message("after", "bob", "qq"))
            message, _ = await received.next(15)
        assert message.message_segment.data == "after"  # not stuck behind the big one
        assert receiver.get_stats()["network"]["total_connections"] == 4  # 3 closes
        delivery = server.get_stats()["delivery"]
        assert delivery["too_big_dropped"] == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([w for w in warnings if "closed over its size limit" in w]) == 1, warnings
        dropped = [w for w in warnings if w.startswith("dropped message")]
        assert len(dropped) == 1 and "last 3 times" in dropped[0]
        assert receiver.get_stats()["messages_refused"] == 0
        with pytest.raises(asyncio.TimeoutError):  # and the big one never comes back
            await received.next(0.5)
    finally:
        await receiver.stop()
        await server.stop()


def test_only_a_close_the_server_started_names_a_limit_to_drop_by() -> None:
    from types import SimpleNamespace

    from maim_message.client.connection import _server_size_limit

    def ws(rcvd: Any, then_sent: Any) -> Any:
        return SimpleNamespace(protocol=SimpleNamespace(close_rcvd=rcvd,
                                                         close_rcvd_then_sent=then_sent))

    over = SimpleNamespace(code=1009, reason="message of 9 bytes exceeds limit of 5 bytes")
    assert _server_size_limit(ws(over, True)) == 5  # the server closed us over our message
    assert _server_size_limit(ws(over, None)) == 5  # (and the connection dropped after)
    assert _server_size_limit(ws(over, False)) is None  # our close, echoed: our limit
    assert _server_size_limit(ws(None, None)) is None
    normal = SimpleNamespace(code=1000, reason="")
    assert _server_size_limit(ws(normal, True)) is None
    assert _server_size_limit(SimpleNamespace()) is None  # Socket.IO: no such frames


async def test_the_server_refuses_to_send_what_its_own_limit_would_refuse() -> None:
    """A forward is a few hundred bytes larger than what arrived: over max_message_size a
    client with the same limit would close on it at every delivery, so it is refused."""
    from maim_message.errors import DeliveryRefused

    server = WebSocketServer(create_server_config(host="127.0.0.1", port=0,
                                                  max_message_size=2_000))
    await server.start()
    try:
        assert await server.send_message(make_message("x" * 1_000, "bob", "qq")) == {}
        with pytest.raises(DeliveryRefused, match="over max_message_size"):
            await server.send_message(make_message("x" * 1_990, "bob", "qq"))
        with pytest.raises(DeliveryRefused):
            await server.broadcast_message(make_message("x" * 1_990, "bob", "qq"))
        assert server.get_stats()["delivery"]["outbox_depth"] == 1  # only the small one
    finally:
        await server.stop()


async def test_a_burst_over_the_queue_bound_waits_for_acks_and_loses_nothing() -> None:
    """message_cache_max_size unacked frames: a further send waits for an ack instead of
    evicting the oldest (lost if the server never got it); with no ack in connect_timeout
    it is refused (False) and the queued ones are kept."""
    import contextlib
    import json

    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    arrived: List[str] = []
    acking = asyncio.Event()

    async def handler(ws: Any) -> None:
        async for raw in ws:
            env = json.loads(raw)
            if env.get("type") != "sys_std":
                continue
            arrived.append(env["msg_id"])
            await acking.wait()  # (no ack at all until then)
            await asyncio.sleep(0.001)  # a server slower than the sender
            with contextlib.suppress(ConnectionClosed):
                await ws.send(sys_ack(env["msg_id"]))

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        client = WebSocketClient(create_client_config(
            f"ws://127.0.0.1:{port}/ws", "k", message_cache_max_size=20, connect_timeout=1))
        try:
            assert await client.connect()
            # no acks: 20 queued, the 21st refused after connect_timeout, none evicted
            for n in range(20):
                assert await client.send_message(make_message(f"q{n}", "k", "qq"))
            assert not await client.send_message(make_message("over", "k", "qq"))
            stats = client.get_stats()
            assert stats["pending_messages"] == 20 and stats["messages_dropped"] == 0
            # acks flowing: a burst of 200 waits for room, every one arrives
            acking.set()
            results = await asyncio.gather(*(client.send_message(make_message(
                f"b{n}", "k", "qq")) for n in range(200)))
            assert all(results)
            for _ in range(500):  # bounded: until the last ones are acked
                if client.get_stats()["pending_messages"] == 0:
                    break
                await asyncio.sleep(0.01)
            assert len(set(arrived)) == 220 and client.get_stats()["messages_dropped"] == 0
            assert client.get_stats()["messages_refused"] == 1  # only "over"
        finally:
            await client.stop()
