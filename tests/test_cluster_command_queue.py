"""The cluster's Redis command queue on a real redis-server (and on a fake one for faults):
replies read with our RESP parser, transactions, script reloads, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, AsyncIterator, List, Optional, Tuple

import pytest
from redis.exceptions import ExecAbortError, ResponseError

from maim_message.backends import redis_pipeline
from maim_message.backends.redis_pipeline import CommandQueue, Script
from maim_message.backends.resp_reader import RespReader
from maim_message.errors import ClusterError

from .conftest import free_port
from .test_cluster import RedisServer, redis_asyncio

SCRIPT = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    srv = RedisServer()
    try:
        await srv.ready()
        yield srv
    finally:
        srv.stop()


async def started(url: str, **redis_args: Any) -> Tuple[Any, CommandQueue]:
    redis = redis_asyncio.Redis.from_url(url, protocol=2, **redis_args)
    queue = CommandQueue(redis, {"echo": Script(SCRIPT)}, stall_timeout=10.0)
    await queue.load_scripts()
    queue.start()
    return redis, queue


async def stopped(redis: Any, queue: CommandQueue) -> None:
    await queue.close()
    await redis.aclose()


async def test_plain_commands_and_transactions_in_one_batch(server: RedisServer) -> None:
    redis, queue = await started(server.url)
    try:
        set_a = queue.push(("SET", "a", "1"), want_result=True)
        tx = queue.push(("MULTI", ("INCR", "a"), ("ECHO", "v"),
                         ("LPUSH", "a", "x"), ("GET", "missing")), want_result=True)
        get_a = queue.push(("GET", "a"), want_result=True)
        assert set_a is not None and tx is not None and get_a is not None
        assert await asyncio.wait_for(set_a, 5) == b"OK"
        exec_reply = await asyncio.wait_for(tx, 5)
        assert exec_reply[0] == 2 and exec_reply[1] == b"v" and exec_reply[3] is None
        assert isinstance(exec_reply[2], ResponseError)
        assert str(exec_reply[2]).startswith("WRONGTYPE")
        assert await asyncio.wait_for(get_a, 5) == b"2"
        assert queue.commands == 1 + 6 + 1  # MULTI and EXEC count
        assert queue.batches == 1
    finally:
        await stopped(redis, queue)


async def test_an_aborted_transaction_fails_its_future_only(server: RedisServer) -> None:
    redis, queue = await started(server.url)
    try:
        bad = queue.push(("MULTI", ("SET", "b", "1"), ("SET", "b")), want_result=True)
        after = queue.push(("GET", "b"), want_result=True)
        assert bad is not None and after is not None
        with pytest.raises(ResponseError, match="wrong number of arguments") as info:
            await asyncio.wait_for(bad, 5)  # why Redis refused it, not only EXECABORT
        assert not isinstance(info.value, ExecAbortError)
        assert await asyncio.wait_for(after, 5) is None  # the transaction did not run
    finally:
        await stopped(redis, queue)


async def test_a_transaction_is_never_split_across_batches(
        server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_pipeline, "MAX_BATCH", 4)
    redis, queue = await started(server.url)
    try:
        futs: List[Optional[asyncio.Future[Any]]] = []
        futs.append(queue.push(("SET", "n", "0"), want_result=True))
        futs.append(queue.push(("INCR", "n"), want_result=True))
        futs.append(queue.push(("MULTI", *[("INCR", "n")] * 5), want_result=True))
        futs.append(queue.push(("INCR", "n"), want_result=True))
        assert queue._pending_cmds == 1 + 1 + 7 + 1
        results = [await asyncio.wait_for(f, 5) for f in futs if f is not None]
        assert results == [b"OK", 1, [2, 3, 4, 5, 6], 7]
        assert queue.batches == 2  # 9 commands (the transaction whole), then 1
        assert queue.commands == 10 and queue._pending_cmds == 0
    finally:
        await stopped(redis, queue)


async def test_noscript_reruns_only_the_script_calls_and_never_a_transaction(
        server: RedisServer) -> None:
    redis, queue = await started(server.url)
    try:
        await redis.script_flush()  # while connected (a restart is a reconnect: reloads)
        plain = queue.push(("EVALSHA", "echo", 1, "p", "1"), want_result=True)
        tx = queue.push(("MULTI", ("SET", "t", "x"), ("XADD", "s", "*", "f", "v")),
                        want_result=True)
        later = queue.push(("EVALSHA", "echo", 1, "q", "2"), want_result=True)
        assert plain is not None and tx is not None and later is not None
        assert await asyncio.wait_for(plain, 5) == [b"p", b"1"]
        assert (await asyncio.wait_for(tx, 5))[0] == b"OK"
        assert await asyncio.wait_for(later, 5) == [b"q", b"2"]
        assert queue.batches == 2  # the batch, then its two script calls alone
        assert await redis.xlen("s") == 1  # the transaction ran once
        with pytest.raises(ValueError, match="script"):
            queue.push(("MULTI", ("EVALSHA", "echo", 1, "u", "3")), want_result=True)
    finally:
        await stopped(redis, queue)


class ScriptedRedis:
    """A fake Redis on a free port: ``answer(command, connection)`` gives each command's
    reply bytes; ``hang_up`` set by it closes the connection once they are written."""

    def __init__(self) -> None:
        self.connections = 0
        self.hang_up = False
        self.server: Optional[asyncio.AbstractServer] = None
        self.port = free_port()

    async def __aenter__(self) -> ScriptedRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()

    def answer(self, command: List[bytes], connection: int) -> bytes:
        return b"+OK\r\n"

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        commands = RespReader()  # a command is an array of bulk strings
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                commands.feed(data)
                for command in commands.take():
                    writer.write(self.answer(command, connection))
                    if self.hang_up:
                        self.hang_up = False
                        await writer.drain()
                        return
                await writer.drain()
        finally:
            writer.close()


class FakeRedis(ScriptedRedis):
    """Answers +OK to everything, except that the first connection's batch of PINGs gets
    ``first`` (a partial or broken reply) and is then closed."""

    def __init__(self, first: bytes) -> None:
        super().__init__()
        self.first = first

    def answer(self, command: List[bytes], connection: int) -> bytes:
        if command[0].upper() != b"PING":
            return b"+OK\r\n"
        if connection == 1:
            self.hang_up = True
            return self.first
        return b"+PONG\r\n"


class LoadingRedis(ScriptedRedis):
    """A Redis that is still loading its dataset: ``-LOADING`` to the first ``loading``
    INCRs (nothing runs), then counts them; +OK to everything else."""

    def __init__(self, loading: int) -> None:
        super().__init__()
        self.loading = loading
        self.count = 0

    def answer(self, command: List[bytes], connection: int) -> bytes:
        if command[0].upper() != b"INCR":
            return b"+OK\r\n"
        if self.loading > 0:
            self.loading -= 1
            return b"-LOADING Redis is loading the dataset in memory\r\n"
        self.count += 1
        return b":%d\r\n" % self.count


async def test_a_loading_redis_gets_the_batch_again_later() -> None:
    async with LoadingRedis(loading=2) as fake:
        redis, queue = await started(f"redis://127.0.0.1:{fake.port}/0")
        try:
            fut = queue.push(("INCR", "n"), want_result=True)
            assert fut is not None
            assert await asyncio.wait_for(fut, 10) == 1  # retried, then run once
            assert queue.failures == 2 and fake.count == 1
        finally:
            await stopped(redis, queue)


async def test_a_silent_redis_times_out_and_the_batch_is_retried(
        server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    redis, queue = await started(server.url, socket_timeout=0.3)
    assert queue.reply_timeout == 0.3
    try:
        assert await asyncio.wait_for(queue.push(("SET", "s", "1"), True), 5) == b"OK"
        caplog.set_level(logging.WARNING, logger=redis_pipeline.__name__)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            fut = queue.push(("INCR", "s"), want_result=True)
            assert fut is not None
            deadline = asyncio.get_running_loop().time() + 10
            while queue.failures == 0:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            assert not fut.done()
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert await asyncio.wait_for(fut, 10) in (2, 3)  # it may have run before the cut
        assert "TimeoutError" in caplog.text
    finally:
        await stopped(redis, queue)


@pytest.mark.parametrize("first", [b"+PONG\r\n+PO", b"+PONG\r\n!garbage\r\n"])
async def test_a_broken_batch_is_discarded_and_written_again(first: bytes) -> None:
    async with FakeRedis(first) as fake:
        redis, queue = await started(f"redis://127.0.0.1:{fake.port}/0")
        try:
            futs = [queue.push(("PING",), want_result=True) for _ in range(3)]
            results = [await asyncio.wait_for(f, 10) for f in futs if f is not None]
            assert results == [b"PONG"] * 3
            assert queue.failures == 1 and queue.batches == 1
        finally:
            await stopped(redis, queue)


async def test_a_redis_py_without_the_streams_fails_at_start_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    redis = redis_asyncio.Redis.from_url("redis://127.0.0.1:1/0", protocol=2)
    monkeypatch.setattr(redis.connection_pool, "make_connection", lambda: object())
    with pytest.raises(ClusterError, match="redis-py"):
        CommandQueue(redis, {})
    await redis.aclose()
