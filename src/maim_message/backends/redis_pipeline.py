"""One ordered, pipelined command stream to Redis for the cluster backend.

Commands are queued synchronously (from the server's callbacks) and written in batches:
one pipeline in flight at a time, so commands run in Redis in the order they were queued
(a presence registration always runs before the stream read that follows it, an append
before the ack of the same message). Under load a batch carries many commands in one
round trip. A batch that fails on a connection error is retried with backoff: nothing
queued is dropped while Redis is away (commands may run twice after a cut; the scripts
tolerate that).

The queue has its own connection and writes RESP itself (``pack``): redis-py's generic
command packing cost ~40 us per command here, more than the rest of a message's work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterError

logger = logging.getLogger(__name__)

MAX_BATCH = 2000
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class QueueStalled(ClusterError):
    """Redis has been unreachable for longer than the queue's stall timeout (what
    ``send_message`` raises then; a :class:`ClusterError`)."""


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "never retrieved" warning for unawaited waiters


class Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = ""


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


class CommandQueue:
    """Ordered batches of Redis commands; ``push`` returns a future when asked."""

    def __init__(self, redis: Redis, scripts: Dict[str, Script],
                 stall_timeout: float = 10.0) -> None:
        self.stall_timeout = stall_timeout
        self._redis = redis
        self._conn = redis.connection_pool.make_connection()
        self._scripts = scripts
        self._pending: List[Tuple[Tuple[Any, ...], Optional[asyncio.Future[Any]]]] = []
        self._batch_done: Optional[asyncio.Future[None]] = None
        self._last_done: Optional[asyncio.Future[None]] = None
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task[None]] = None
        self.commands = 0  # sent to Redis (a script call counts one; MULTI and EXEC count)
        self.batches = 0
        self.failures = 0
        self.rtt = 0.0  # s: moving average of a batch's round trip (send to last reply)

    async def load_scripts(self) -> None:
        for script in self._scripts.values():
            script.sha = await self._redis.script_load(script.source)

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
        """Queue one command (``("EVALSHA", script_name, ...)`` runs a named script;
        ``("MULTI", command, ...)`` is a transaction, written whole in one batch, whose
        result is EXEC's reply)."""
        fut: Optional[asyncio.Future[Any]] = None
        if want_result:
            fut = asyncio.get_running_loop().create_future()
        if self._batch_done is None:
            done = self._batch_done = self._last_done = asyncio.get_running_loop().create_future()
            done.add_done_callback(_consume)
            self._wake.set()
        self._pending.append((args, fut))
        return fut

    def written(self) -> Optional[asyncio.Future[None]]:
        """Resolves once every command queued so far has run in Redis (None: nothing queued)."""
        done = self._last_done
        return done if done is not None and not done.done() else None

    # -- writing ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.05
        failing_since: Optional[float] = None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            done = self._batch_done
            if not self._pending:
                self._batch_done = None
            else:  # the rest goes in the next batch: it keeps the same completion future
                done = None
            try:
                results = await self._execute(batch)
            except _RETRYABLE as exc:
                self.failures += 1
                logger.warning("cluster: Redis unreachable (%s); retrying in %.2fs",
                               type(exc).__name__, backoff)
                self._pending[:0] = batch
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

    async def _execute(self, batch: List[Tuple[Tuple[Any, ...], Any]]) -> List[Any]:
        conn = self._conn
        results: List[Any] = []
        for attempt in range(2):
            scripts = self._scripts
            packed: List[bytes] = []
            for args, _fut in batch:
                if args[0] == "MULTI":
                    packed.append(b"*1\r\n$5\r\nMULTI\r\n")
                    packed += [_pack_command(scripts, command) for command in args[1:]]
                    packed.append(b"*1\r\n$4\r\nEXEC\r\n")
                else:
                    packed.append(_pack_command(scripts, args))
            results = []
            started = time.monotonic()
            try:
                await conn.send_packed_command(packed, check_health=False)
                for args, _fut in batch:
                    refused: Optional[ResponseError] = None
                    skip = len(args) if args[0] == "MULTI" else 0  # MULTI's OK, QUEUED...
                    for _ in range(skip):
                        try:
                            await conn.read_response()
                        except ResponseError as exc:  # not queued: EXEC aborts
                            refused = refused or exc
                    try:
                        results.append(await conn.read_response())
                    except ResponseError as exc:  # an error reply: the connection is fine
                        # a transaction Redis refused answers why (OOM, READONLY...)
                        results.append(refused or exc)
            except BaseException:
                await conn.disconnect()
                raise
            self.commands += len(packed)
            self.batches += 1
            elapsed = time.monotonic() - started
            self.rtt = elapsed if not self.rtt else self.rtt * 0.9 + elapsed * 0.1
            if attempt == 0 and any(_is_noscript(r) for r in results):
                # Redis restarted (scripts flushed): load them and run the batch again.
                await self.load_scripts()
                continue
            return results
        return results


def _pack_command(scripts: Dict[str, Script], args: Tuple[Any, ...]) -> bytes:
    if args[0] == "EVALSHA":
        return pack(("EVALSHA", scripts[args[1]].sha, *args[2:]))
    return pack(args)


def _is_noscript(result: Any) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT"))
