"""The command queue's own read path (``redis_link``): a Redis restart, a connection killed
while idle, a stall longer than the stall timeout, replies to no command, a unix socket,
one watchdog across batches, and a close that leaves nothing behind."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator, Callable, List

import pytest

from maim_message.backends.redis_link import RespLink
from maim_message.backends.redis_pipeline import CommandQueue, QueueStalled

from .test_cluster import RedisServer
from .test_cluster_command_queue import ScriptedRedis, started, stopped
from .test_cluster_exactly_once import AofRedis


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    srv = RedisServer()
    try:
        await srv.ready()
        yield srv
    finally:
        srv.stop()


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def link_of(queue: CommandQueue) -> RespLink:
    link = queue._link
    assert link is not None
    return link


async def result(queue: CommandQueue, *args: Any) -> Any:
    fut = queue.push(args, want_result=True)
    assert fut is not None
    return await asyncio.wait_for(fut, 10)


async def test_a_restarted_redis_gets_the_queued_commands_and_the_scripts_again(
        tmp_path: Path) -> None:
    server = AofRedis(tmp_path)
    await server.start()
    redis, queue = await started(server.url)
    try:
        assert await result(queue, "EVALSHA", "echo", 1, "k", "1") == [b"k", b"1"]
        server.stop()  # SIGKILL: the connection drops while the queue is idle
        during = [queue.push(("INCR", "n"), want_result=True),
                  queue.push(("EVALSHA", "echo", 1, "k", "2"), want_result=True)]
        await until(lambda: queue.failures >= 2, "the queue retried with backoff")
        assert not any(f is not None and f.done() for f in during)
        batches = queue.batches
        await server.start()  # a new process: no scripts until the queue loads them
        assert [await asyncio.wait_for(f, 10) for f in during if f is not None] == [
            1, [b"k", b"2"]]
        assert queue.batches == batches + 1  # no NOSCRIPT re-run: loaded on reconnect
        assert queue.written() is None
    finally:
        await stopped(redis, queue)
        server.stop()


async def test_a_connection_killed_while_idle_is_reopened_for_the_next_batch(
        server: RedisServer) -> None:
    redis, queue = await started(server.url)
    try:
        own_id = await result(queue, "CLIENT", "ID")
        first = link_of(queue)
        assert await redis.client_kill_filter(_id=own_id) == 1
        await until(lambda: not first.connected, "the link saw the close")
        assert await result(queue, "SET", "after", "1") == b"OK"
        assert queue.failures == 0  # nothing was in flight: reconnected, not retried
        assert link_of(queue) is not first and link_of(queue).connected
    finally:
        await stopped(redis, queue)


async def test_redis_away_past_the_stall_timeout_fails_waiters_and_keeps_commands(
        tmp_path: Path) -> None:
    server = AofRedis(tmp_path)
    await server.start()
    redis, queue = await started(server.url)
    queue.stall_timeout = 0.3
    try:
        assert await result(queue, "SET", "n", "10") == b"OK"
        server.stop()
        waiter = queue.push(("INCR", "n"), want_result=True)
        written = queue.written()
        assert waiter is not None and written is not None
        with pytest.raises(QueueStalled):
            await asyncio.wait_for(waiter, 10)
        with pytest.raises(QueueStalled):
            await asyncio.wait_for(written, 1)
        assert queue.depth == 1  # the command stays queued
        await server.start()
        assert await result(queue, "GET", "n") == b"11"  # the stalled INCR ran first
    finally:
        await stopped(redis, queue)
        server.stop()


async def test_a_completion_handed_out_while_a_batch_failed_still_resolves(
        server: RedisServer) -> None:
    redis, queue = await started(server.url, socket_timeout=0.3)
    try:
        assert await result(queue, "SET", "d", "0") == b"OK"
        server.proc.send_signal(signal.SIGSTOP)
        try:
            first = queue.push(("INCR", "d"), want_result=True)
            written_first = queue.written()
            await until(lambda: queue.depth == 0, "the first INCR is in flight")
            later = queue.push(("INCR", "d"), want_result=True)
            written_later = queue.written()  # behind the batch that is to time out
            assert first is not None and later is not None
            assert written_first is not None and written_later is not None
            assert written_first is not written_later
            await until(lambda: queue.failures >= 1, "the batch timed out")
        finally:
            server.proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(asyncio.gather(written_first, written_later), 10)
        assert await asyncio.wait_for(first, 1) in (1, 2)  # may have run before the cut
        assert await asyncio.wait_for(later, 1) == await asyncio.wait_for(first, 1) + 1
    finally:
        await stopped(redis, queue)


class ChattyRedis(ScriptedRedis):
    """Sends one reply too many to the first connection's first PING."""

    def answer(self, command: List[bytes], connection: int) -> bytes:
        if command[0].upper() == b"PING" and connection == 1:
            return b"+PONG\r\n+EXTRA\r\n"
        return b"+PONG\r\n" if command[0].upper() == b"PING" else b"+OK\r\n"


async def test_a_reply_to_no_command_drops_the_connection_and_the_batch_is_retried() -> None:
    async with ChattyRedis() as fake:
        redis, queue = await started(f"redis://127.0.0.1:{fake.port}/0")
        try:
            assert await result(queue, "PING") == b"PONG"
            assert queue.failures == 1 and fake.connections >= 2
        finally:
            await stopped(redis, queue)


async def test_the_queue_works_over_a_unix_socket(tmp_path: Path) -> None:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed")
    path = tmp_path / "redis.sock"
    proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(path), "--save", "",
                             "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await until(path.exists, "redis-server's socket")
        redis, queue = await started(f"unix://{path}?db=3")
        try:
            assert await result(queue, "SET", "u", "1") == b"OK"
            assert await result(queue, "EVALSHA", "echo", 1, "u", "2") == [b"u", b"2"]
            assert await redis.get("u") == b"1"  # the same database (SELECT 3 by redis-py)
        finally:
            await stopped(redis, queue)
    finally:
        proc.kill()
        proc.wait(10)


async def test_one_watchdog_is_kept_across_batches(server: RedisServer) -> None:
    redis, queue = await started(server.url)
    try:
        assert await result(queue, "SET", "w", "0") == b"OK"
        watchdog = link_of(queue)._watchdog
        assert watchdog is not None
        for _ in range(20):
            assert await result(queue, "INCR", "w")
        assert link_of(queue)._watchdog is watchdog  # not a timer per round trip
        assert not watchdog.cancelled()
    finally:
        await stopped(redis, queue)


async def test_close_leaves_no_task_and_no_connection(server: RedisServer) -> None:
    redis, queue = await started(server.url)
    link = link_of(queue)
    transport = link._transport
    assert transport is not None
    queue.push(("SET", "c", "1"))
    await queue.close()
    assert queue._task is None and queue._link is None
    assert transport.is_closing() and not link.connected
    assert not queue._conn.is_connected
    assert await redis.get("c") == b"1"  # what was queued was written first
    await redis.aclose()


async def test_close_while_redis_is_away_stops_the_retries(tmp_path: Path) -> None:
    server = AofRedis(tmp_path)
    await server.start()
    redis, queue = await started(server.url)
    try:
        assert await result(queue, "PING") == b"PONG"
        server.stop()
        queue.push(("SET", "x", "1"))
        await until(lambda: queue.failures >= 1, "the queue is retrying")
        await queue.close(timeout=0.2)
        assert queue._task is None and queue._link is None
        failures = queue.failures
        await asyncio.sleep(0.3)
        assert queue.failures == failures  # nothing retries after close
    finally:
        await redis.aclose()
        server.stop()


async def test_an_unexpected_error_while_reconnecting_is_retried_not_fatal(
        server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """A reconnect whose SCRIPT LOAD is refused (NOPERM after an ACL change) must not end
    the queue silently with every later command waiting forever: it is logged and
    retried with backoff like a lost connection."""
    from redis.exceptions import ResponseError

    redis, queue = await started(server.url)
    try:
        assert await result(queue, "SET", "k", "1") == b"OK"
        real = redis.script_load
        refusals = [ResponseError("NOPERM this user has no permissions to run 'script'")]

        async def script_load(source: str) -> Any:
            if refusals:
                raise refusals.pop()
            return await real(source)

        redis.script_load = script_load
        await redis.client_kill_filter(_type="normal", skipme=True)  # the queue's link
        await until(lambda: not link_of(queue).connected, "link never saw the kill")
        with caplog.at_level("ERROR"):
            assert await result(queue, "GET", "k") == b"1"  # after one refused reconnect
        assert refusals == [] and "NOPERM" in caplog.text
    finally:
        await stopped(redis, queue)


async def test_close_while_redis_stalls_stops_everything_and_fails_what_waits(
        server: RedisServer) -> None:
    """close() waits (bounded) for what is queued; Redis stalling meanwhile must not make
    it raise half-way (leaving its task and connection behind), and a command it could
    not write fails its waiter instead of leaving it waiting forever."""
    import os

    from maim_message.errors import ClusterError

    redis, queue = await started(server.url, socket_timeout=0.2)
    queue.stall_timeout = 0.3
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        first = queue.push(("SET", "a", "1"), want_result=True)
        assert first is not None
        with pytest.raises(QueueStalled):
            await asyncio.wait_for(first, 5)
        later = queue.push(("SET", "b", "1"), want_result=True)
        assert later is not None
        await asyncio.wait_for(queue.close(timeout=3.0), 10)  # returns, does not raise
        assert queue._task is None
        with pytest.raises(ClusterError):
            await asyncio.wait_for(later, 1)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        await redis.aclose()


async def test_a_patient_command_outlasts_a_stall_and_runs_once_redis_is_back(
        server: RedisServer) -> None:
    """A stream read waits past the stall timeout (its caller would only queue another
    read per retry, piling them up while Redis is away); other waiters still give up."""
    import os

    redis, queue = await started(server.url, socket_timeout=0.2)
    queue.stall_timeout = 0.3
    try:
        assert await result(queue, "RPUSH", "l", "x") == 1
        os.kill(server.proc.pid, signal.SIGSTOP)
        impatient = queue.push(("SET", "a", "1"), want_result=True)
        read = queue.push(("LRANGE", "l", 0, -1), want_result=True, patient=True)
        assert impatient is not None and read is not None
        with pytest.raises(QueueStalled):
            await asyncio.wait_for(impatient, 5)
        assert not read.done()
        os.kill(server.proc.pid, signal.SIGCONT)
        assert await asyncio.wait_for(read, 10) == [b"x"]
        assert queue.depth == 0
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        await stopped(redis, queue)
