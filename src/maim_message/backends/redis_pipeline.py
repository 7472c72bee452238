"""One ordered, pipelined command stream to Redis for the cluster backend.

Commands are queued synchronously (from the server's callbacks) and written in batches:
one pipeline in flight at a time, so commands run in Redis in the order they were queued
(a presence registration always runs before the stream read that follows it, an append
before the ack of the same message). Under load a batch carries many commands in one
round trip. A batch that fails on a connection error is retried with backoff: nothing
queued is dropped while Redis is away (commands may run twice after a cut; the scripts
tolerate that).

The queue has its own connection and writes RESP itself (``pack``): redis-py's generic
command packing cost ~40 us per command here, more than the rest of a message's work. For
the same reason it reads the replies itself (``resp_reader``: all of a batch's replies from
one buffer, instead of redis-py's ~10 us per reply); redis-py still makes the connection
(AUTH, SELECT, TLS, the RESP2 handshake).

An item ``("MULTI", cmd, cmd, ...)`` is a transaction: written as MULTI, the commands, EXEC,
always whole in one batch; its result is EXEC's reply (a list, a failed command's error in
its slot) or the error that aborted it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import redis as redis_py
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterError
from .resp_reader import RespProtocolError, RespReader

logger = logging.getLogger(__name__)

MAX_BATCH = 2000  # commands per written batch (a transaction is never split)
REPLY_TIMEOUT = 5.0  # s without a byte from Redis mid-batch (if the URL sets no socket_timeout)
_READ_SIZE = 1 << 18
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError, RespProtocolError)


class QueueStalled(ClusterError):
    """Redis has been unreachable for longer than the queue's stall timeout (what
    ``send_message`` raises then; a :class:`ClusterError`)."""

    still_queued = True  # the commands stay queued and run once Redis is back


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "never retrieved" warning for unawaited waiters


class Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = ""


Item = Tuple[Tuple[Any, ...], Optional["asyncio.Future[Any]"]]


def pack(args: Tuple[Any, ...]) -> bytes:
    """One command in RESP (arguments: bytes, str or int)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


_MULTI = pack(("MULTI",))
_EXEC = pack(("EXEC",))


def _size(args: Tuple[Any, ...]) -> int:
    """Commands an item sends: a transaction's plus its MULTI and EXEC."""
    return len(args) + 1 if args[0] == "MULTI" else 1


class CommandQueue:
    """Ordered batches of Redis commands; ``push`` returns a future when asked."""

    def __init__(self, redis: Redis, scripts: Dict[str, Script],
                 stall_timeout: float = 10.0) -> None:
        self.stall_timeout = stall_timeout
        self._redis = redis
        self._conn = conn = redis.connection_pool.make_connection()
        if not (hasattr(conn, "_reader") and hasattr(conn, "_writer")):
            raise ClusterError(
                f"redis-py {redis_py.__version__}: its asyncio connection has no "
                "_reader/_writer streams, which the cluster's command queue reads replies "
                "from (redis-py 5 to 8 have them)")
        if getattr(conn, "protocol", 2) not in (2, "2", None):
            raise ClusterError("the cluster's command queue needs RESP2 (protocol=2)")
        timeout = getattr(conn, "socket_timeout", None)
        self.reply_timeout: float = timeout if timeout else REPLY_TIMEOUT
        self._scripts = scripts
        self._replies = RespReader()
        self._pending: List[Item] = []
        self._pending_cmds = 0  # commands the pending items send
        self._batch_done: Optional[asyncio.Future[None]] = None
        self._last_done: Optional[asyncio.Future[None]] = None
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task[None]] = None
        self._last_read = 0.0  # loop time of the last bytes read (the stall watchdog's view)
        self._timed_out = False
        self._watchdog: Optional[asyncio.TimerHandle] = None
        self.commands = 0  # sent to Redis (a script call counts one; MULTI and EXEC too)
        self.batches = 0
        self.failures = 0
        self.rtt = 0.0  # s: moving average of a batch's round trip (send to last reply)

    async def load_scripts(self) -> None:
        """Connect the queue's own connection (checked here, at start-up) and load scripts
        (again on every reconnect: a restarted Redis has none)."""
        if not self._conn.is_connected:
            await self._open()
            return
        for script in self._scripts.values():
            script.sha = await self._redis.script_load(script.source)

    async def _open(self) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        conn = self._conn
        await conn.connect()  # redis-py's handshake: AUTH, SELECT, TLS, RESP2
        reader, writer = conn._reader, conn._writer
        if not (isinstance(reader, asyncio.StreamReader)
                and isinstance(writer, asyncio.StreamWriter)):
            await conn.disconnect()
            raise ClusterError(f"redis-py {redis_py.__version__}: its connection's "
                               "_reader/_writer are not asyncio streams")
        self._replies.clear()
        for script in self._scripts.values():
            script.sha = await self._redis.script_load(script.source)
        return reader, writer

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), then stop."""
        if self._task is None:
            return
        if self._last_done is not None and not self._last_done.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._last_done), timeout)
            except asyncio.TimeoutError:
                logger.warning("cluster: %d Redis command(s) not written at shutdown",
                               len(self._pending))
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self._conn.disconnect()

    @property
    def depth(self) -> int:
        return len(self._pending)

    # -- queueing ---------------------------------------------------------------------------

    def push(self, args: Tuple[Any, ...],
             want_result: bool = False) -> Optional[asyncio.Future[Any]]:
        """Queue one command (``("EVALSHA", script_name, ...)`` runs a named script) or a
        transaction ``("MULTI", (command...), (command...), ...)``."""
        if args[0] == "MULTI" and any(cmd[0] == "EVALSHA" for cmd in args[1:]):
            raise ValueError("a transaction must not call a script (after a SCRIPT FLUSH "
                             "it could not run again without repeating its other commands)")
        fut: Optional[asyncio.Future[Any]] = None
        if want_result:
            fut = asyncio.get_running_loop().create_future()
        if self._batch_done is None:
            done = self._batch_done = self._last_done = asyncio.get_running_loop().create_future()
            done.add_done_callback(_consume)
            self._wake.set()
        self._pending.append((args, fut))
        self._pending_cmds += len(args) + 1 if args[0] == "MULTI" else 1
        return fut

    def written(self) -> Optional[asyncio.Future[None]]:
        """Resolves once every command queued so far has run in Redis (None: nothing queued)."""
        done = self._last_done
        return done if done is not None and not done.done() else None

    # -- writing ----------------------------------------------------------------------------

    def _next_batch(self) -> Tuple[List[Item], int]:
        """The next batch (about MAX_BATCH commands, transactions whole) and its size."""
        if self._pending_cmds <= MAX_BATCH:
            batch, cmds = self._pending, self._pending_cmds
            self._pending, self._pending_cmds = [], 0
            return batch, cmds
        cmds = count = 0
        for args, _fut in self._pending:
            cmds += _size(args)
            count += 1
            if cmds >= MAX_BATCH:
                break
        batch = self._pending[:count]
        del self._pending[:count]
        self._pending_cmds -= cmds
        return batch, cmds

    async def _run(self) -> None:
        backoff = 0.05
        failing_since: Optional[float] = None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, cmds = self._next_batch()
            done = self._batch_done
            if not self._pending:
                self._batch_done = None
            else:  # the rest goes in the next batch: it keeps the same completion future
                done = None
            try:
                results = await self._execute(batch, cmds)
            except _RETRYABLE as exc:
                self.failures += 1
                logger.warning("cluster: Redis unreachable (%s); retrying in %.2fs",
                               type(exc).__name__, backoff)
                self._pending[:0] = batch
                self._pending_cmds += cmds
                if done is not None and not done.done():
                    self._batch_done = done
                now = loop.time()
                failing_since = failing_since or now
                if now - failing_since > self.stall_timeout:
                    self._fail_waiters()  # the commands stay queued; only waiters give up
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            failing_since = None
            for (args, fut), result in zip(batch, results):
                if isinstance(result, Exception):
                    logger.warning("cluster: Redis command %s failed: %s", args[0], result)
                    if fut is not None and not fut.done():
                        fut.set_exception(result)
                elif fut is not None and not fut.done():
                    fut.set_result(result)
            if done is not None and not done.done():
                done.set_result(None)

    def _fail_waiters(self) -> None:
        stalled = QueueStalled(f"Redis did not confirm within {self.stall_timeout:g}s; the "
                               "message stays queued and is written when Redis is back")
        for _args, fut in self._pending:
            if fut is not None and not fut.done():
                fut.set_exception(stalled)
        for done in (self._batch_done, self._last_done):
            if done is not None and not done.done():
                done.set_exception(stalled)
        self._batch_done = None  # later commands get a fresh completion future

    def _pack(self, args: Tuple[Any, ...]) -> bytes:
        if args[0] == "EVALSHA":
            return pack(("EVALSHA", self._scripts[args[1]].sha, *args[2:]))
        return pack(args)

    def _pack_batch(self, batch: List[Item]) -> bytes:
        """The batch's RESP."""
        out: List[bytes] = []
        pack_one = self._pack
        for args, _fut in batch:
            if args[0] == "MULTI":
                out.append(_MULTI)
                out.extend(pack_one(cmd) for cmd in args[1:])
                out.append(_EXEC)
            else:
                out.append(pack_one(args))
        return b"".join(out)

    async def _execute(self, batch: List[Item], cmds: int) -> List[Any]:
        """Write the batch, read its ``cmds`` replies: one result per item.

        A script Redis no longer has (``SCRIPT FLUSH``; a restart is a reconnect, which
        loads them) is loaded and that item alone runs again: the batch's other items ran,
        and a transaction must not append twice. A ``LOADING`` answer (a restarted Redis
        still reading its AOF) ran nothing: the batch is retried with backoff."""
        errors = self._replies.errors
        results = self._results(batch, await self._send(batch, cmds))
        if self._replies.errors == errors:
            return results  # no error reply at all (the usual batch): nothing to look for
        lost = [n for n, result in enumerate(results) if _is_noscript(result)]
        if lost:
            await self.load_scripts()
            again = [batch[n] for n in lost]  # script calls: never inside a transaction
            for n, result in zip(lost, self._results(again, await self._send(again, len(again)))):
                results[n] = result
        for result in results:
            if isinstance(result, RedisConnectionError):
                raise result
        return results

    async def _send(self, batch: List[Item], cmds: int) -> List[Any]:
        """One round trip of the batch's commands: their ``cmds`` replies."""
        conn = self._conn
        data = self._pack_batch(batch)
        started = time.monotonic()
        try:
            replies = await self._round_trip(data, cmds)
        except BaseException as exc:
            self._replies.clear()  # a partial batch's replies are void
            await conn.disconnect(nowait=True)
            if self._timed_out:
                raise RedisTimeoutError(f"Redis sent nothing for {self.reply_timeout:g}s "
                                        "mid-batch") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Redis connection lost: {exc}") from exc
            raise
        self.commands += cmds
        self.batches += 1
        elapsed = time.monotonic() - started
        self.rtt = elapsed if not self.rtt else self.rtt * 0.9 + elapsed * 0.1
        return replies

    @staticmethod
    def _results(batch: List[Item], replies: List[Any]) -> List[Any]:
        """One result per item: a transaction's is EXEC's reply, or why it was refused."""
        if len(replies) == len(batch):
            return replies  # no transaction in the batch
        results: List[Any] = []
        at = 0
        for args, _fut in batch:
            if args[0] == "MULTI":
                at += len(args) + 1
                result = replies[at - 1]  # EXEC's reply
                if isinstance(result, ResponseError):  # aborted: say why (OOM, LOADING...)
                    result = next((r for r in replies[at - len(args):at - 1]
                                   if isinstance(r, RedisError)), result)
                results.append(result)
            else:
                results.append(replies[at])
                at += 1
        return results

    async def _round_trip(self, data: bytes, count: int) -> List[Any]:
        """Write ``data`` and read ``count`` replies; a watchdog drops the connection if
        Redis sends nothing for ``reply_timeout`` (redis-py's socket_timeout did that)."""
        self._timed_out = False
        if not self._conn.is_connected:
            await self._open()
        reader, writer = self._conn._reader, self._conn._writer
        assert reader is not None and writer is not None
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        self._watchdog = loop.call_at(self._last_read + self.reply_timeout, self._watch, writer)
        try:
            writer.write(data)
            await writer.drain()
            self._last_read = loop.time()  # a long write is not Redis's silence
            parser = self._replies
            replies = parser.take(count)
            while len(replies) < count:
                chunk = await reader.read(_READ_SIZE)
                if not chunk:
                    raise RedisConnectionError("Redis closed the connection mid-batch")
                self._last_read = loop.time()
                parser.feed(chunk)
                replies += parser.take(count - len(replies))
            return replies
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()

    def _watch(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        due = self._last_read + self.reply_timeout
        if loop.time() < due:
            self._watchdog = loop.call_at(due, self._watch, writer)
            return
        self._timed_out = True
        writer.transport.abort()  # the pending read or drain fails now


def _is_noscript(result: Any) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT"))
