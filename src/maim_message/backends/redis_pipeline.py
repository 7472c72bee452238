"""One ordered, pipelined command stream to Redis for the cluster backend.

Commands are queued synchronously (from the server's callbacks) and written in batches:
one pipeline in flight at a time, so commands run in Redis in the order they were queued
(a presence registration always runs before the stream read that follows it, an append
before the ack of the same message). Under load a batch carries many commands in one
round trip. A batch that fails on a connection error is retried with backoff: nothing
queued is dropped while Redis is away (commands may run twice after a cut; the scripts
tolerate that).

The queue has its own connection and writes RESP itself (``resp_pack``): redis-py's
generic command packing cost ~40 us per command here, more than the rest of a message's
work. For the same reason it reads the replies itself (``resp_codec``: all of a batch's
replies from one buffer, instead of redis-py's ~10 us per reply), from the transport
directly (``redis_link``: no stream, no task wake-up per round trip); redis-py still makes
the connection (AUTH, SELECT, TLS, unix sockets, the RESP2 handshake).

Writing is driven by callbacks while all goes well (a batch is written as the previous
one's replies are in) and by a task while it does not (reconnects, backoff, script
reloads), so one batch at a time is in flight either way.

An item ``("MULTI", cmd, cmd, ...)`` is a transaction: written as MULTI, the commands, EXEC,
always whole in one batch; its result is EXEC's reply (a list, a failed command's error in
its slot) or the error that aborted it. A ``cmd`` may be a ``Packed`` run of commands its
builder encoded (the send batch's body).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterError
from .redis_link import RespLink, check_connection
from .resp_pack import Packed, pack, pack_into
from .resp_reader import RespProtocolError

__all__ = ["CommandQueue", "Packed", "QueueStalled", "Script", "pack", "pack_into"]

logger = logging.getLogger(__name__)

MAX_BATCH = 2000  # commands per written batch (a transaction is never split)
REPLY_TIMEOUT = 5.0  # s without a byte from Redis mid-batch (if the URL sets no socket_timeout)
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError, RespProtocolError)


class QueueStalled(ClusterError):
    """Redis has been unreachable for longer than the queue's stall timeout (what
    ``send_message`` raises then; a :class:`ClusterError`)."""

    still_queued = True  # the commands stay queued and run once Redis is back


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "never retrieved" warning for unawaited waiters


def _resolve_like(target: asyncio.Future[None], source: asyncio.Future[None]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(None)


class Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = ""


Item = Tuple[Tuple[Any, ...], Optional["asyncio.Future[Any]"]]


_MULTI = pack(("MULTI",))
_EXEC = pack(("EXEC",))


def _size(args: Tuple[Any, ...]) -> int:
    """Commands an item sends: a transaction's plus its MULTI and EXEC."""
    if args[0] != "MULTI":
        return 1
    return 1 + sum(cmd.commands if cmd.__class__ is Packed else 1 for cmd in args)


class CommandQueue:
    """Ordered batches of Redis commands; ``push`` returns a future when asked."""

    def __init__(self, redis: Redis, scripts: Dict[str, Script],
                 stall_timeout: float = 10.0) -> None:
        self.stall_timeout = stall_timeout
        self._redis = redis
        self._conn = conn = redis.connection_pool.make_connection()
        check_connection(conn)
        self._link: Optional[RespLink] = None  # the open connection's data path
        timeout = getattr(conn, "socket_timeout", None)
        self.reply_timeout: float = timeout if timeout else REPLY_TIMEOUT
        self._scripts = scripts
        self._pending: List[Item] = []
        self._pending_cmds = 0  # commands the pending items send
        self._batch_done: Optional[asyncio.Future[None]] = None
        self._last_done: Optional[asyncio.Future[None]] = None
        self._busy = True  # a batch is due, in flight or recovering (or not started)
        self._stopped = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._task: Optional[asyncio.Task[None]] = None  # the slow path, while it runs
        self.commands = 0  # sent to Redis (a script call counts one; MULTI and EXEC too)
        self.batches = 0
        self.failures = 0
        self.rtt = 0.0  # s: moving average of a batch's round trip (send to last reply)
        self.down_since: Optional[float] = None  # monotonic: batches failing since then
        self.stalled = False  # failing for longer than stall_timeout (waiters failed)
        self._patient: Set[asyncio.Future[Any]] = set()  # futures a stall does not fail
        # told when a stall fails the waiters (the owner of patient futures fails its own
        # waiters then, and still gets the results once the commands ran)
        self.on_stall: Optional[Callable[[QueueStalled], None]] = None

    async def load_scripts(self) -> None:
        """Connect the queue's own connection (checked here, at start-up) and load scripts
        (again on every reconnect: a restarted Redis has none)."""
        if self._link is None or not self._link.connected:
            await self._open()
            return
        for script in self._scripts.values():
            script.sha = await self._redis.script_load(script.source)

    async def _open(self) -> RespLink:
        if self._link is not None:  # lost: redis-py's side of it is reset first
            link, self._link = self._link, None
            await link.drop()
        link = await RespLink.open(self._conn, self.reply_timeout)
        try:
            for script in self._scripts.values():
                script.sha = await self._redis.script_load(script.source)
        except BaseException:
            await link.drop()
            raise
        self._link = link
        return link

    def start(self) -> None:
        """Start writing (what was queued before goes first)."""
        self._loop = asyncio.get_running_loop()
        self._busy = False
        if self._pending:
            self._kick()

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), then stop: no task, no connection
        left."""
        if self._loop is not None and not self._stopped and self._last_done is not None \
                and not self._last_done.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._last_done), timeout)
            except (asyncio.TimeoutError, ClusterError):  # not written in time, or stalled
                logger.warning("cluster: %d Redis command(s) not written at shutdown",
                               len(self._pending))
        self._stopped = self._busy = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            await link.close()  # a batch in flight is failed (``_landed``)
        else:
            await self._conn.disconnect()
        self._abandon(self._pending, self._last_done)  # nothing waits forever
        self._pending, self._pending_cmds = [], 0

    @staticmethod
    def _abandon(batch: List[Item], done: Optional[asyncio.Future[None]]) -> None:
        """The queue closed with these not written: their waiters fail."""
        closed = ClusterError("the cluster stopped before Redis confirmed the command")
        for _args, fut in batch:
            if fut is not None and not fut.done():
                fut.set_exception(closed)
                fut.add_done_callback(_consume)
        if done is not None and not done.done():
            done.set_exception(closed)

    @property
    def depth(self) -> int:
        return len(self._pending)

    # -- queueing ---------------------------------------------------------------------------

    def push(self, args: Tuple[Any, ...], want_result: bool = False,
             patient: bool = False) -> Optional[asyncio.Future[Any]]:
        """Queue one command (``("EVALSHA", script_name, ...)`` runs a named script) or a
        transaction ``("MULTI", (command...), (command...), ...)``. ``patient``: its
        result is waited for past the stall timeout (a stream read the caller would
        only queue again: it runs once Redis is back, or fails when the queue closes)."""
        if args[0] == "MULTI" and any(cmd.__class__ is not Packed and cmd[0] == "EVALSHA"
                                      for cmd in args[1:]):
            raise ValueError("a transaction must not call a script (after a SCRIPT FLUSH "
                             "it could not run again without repeating its other commands)")
        fut: Optional[asyncio.Future[Any]] = None
        loop = self._loop or asyncio.get_running_loop()  # (a system call per use on 3.11)
        if want_result:
            fut = loop.create_future()
            if patient:
                self._patient.add(fut)
                fut.add_done_callback(self._patient.discard)
        if self._batch_done is None:
            done = self._batch_done = self._last_done = loop.create_future()
            done.add_done_callback(_consume)
        self._pending.append((args, fut))
        self._pending_cmds += 1 if args[0] != "MULTI" else _size(args)
        if not self._busy:
            self._kick()
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

    def _take(self) -> Tuple[List[Item], int, Optional[asyncio.Future[None]]]:
        """The next batch, its size, and the completion future it resolves (None when the
        rest of the queue goes in a later batch: that one resolves it)."""
        batch, cmds = self._next_batch()
        done = self._batch_done
        if not self._pending:
            self._batch_done = None
        else:
            done = None
        return batch, cmds, done

    # The fast path: callbacks only, no task. The first push schedules a write (one loop
    # callback: what else is queued in this loop turn joins the batch); as a batch's last
    # reply is parsed its results are delivered and the next write is scheduled behind
    # their callbacks (what they queue joins it). Anything unusual (no connection, a lost
    # one, NOSCRIPT or LOADING replies) goes to the slow path, a task, which hands back
    # after its first clean batch.

    def _kick(self) -> None:
        self._busy = True
        assert self._loop is not None
        self._loop.call_soon(self._write_next)

    def _write_next(self) -> None:
        if self._stopped:
            return
        if not self._pending:
            self._busy = False
            return
        batch, cmds, done = self._take()
        link = self._link
        if link is None or not link.connected:
            self._recover(batch, cmds, done, None)
            return
        link.send_then(self._pack_batch(batch), cmds,
                       partial(self._landed, batch, cmds, done, link.replies.errors,
                               time.monotonic()))

    def _landed(self, batch: List[Item], cmds: int, done: Optional[asyncio.Future[None]],
                errors: int, started: float, replies: Optional[List[Any]],
                failed: Optional[Exception]) -> None:
        """A fast-path batch's outcome (called by the link as its last reply is parsed)."""
        if replies is not None:
            self._counted(cmds, started)
            link = self._link
            clean = link is not None and link.replies.errors == errors
            results = self._results(batch, replies)
            if clean or not any(_needs_recovery(result) for result in results):
                self._deliver(batch, results, done)
                self._kick()  # after the callbacks of these results: what they queue joins
                return
            self._recover(batch, cmds, done, (replies, True))
        elif not self._stopped:
            self._recover(batch, cmds, done, failed)
        else:  # closed while in flight
            self._abandon(batch, done)

    def _recover(self, batch: List[Item], cmds: int, done: Optional[asyncio.Future[None]],
                 outcome: Any) -> None:
        if not self._stopped:
            self._task = asyncio.ensure_future(self._run(batch, cmds, done, outcome))

    async def _run(self, batch: List[Item], cmds: int, done: Optional[asyncio.Future[None]],
                   outcome: Any) -> None:
        """The slow path, from a batch not sent (``outcome`` None), failed (an exception)
        or answered with errors to look at (its replies): reconnects with backoff, reloads
        scripts, re-runs NOSCRIPT calls; back to the fast path after a clean batch."""
        backoff = 0.05
        failing_since: Optional[float] = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                if outcome is None:
                    outcome = await self._send(batch, cmds)
                elif isinstance(outcome, BaseException):
                    raise outcome
                results = await self._settle(batch, *outcome)
                break
            except asyncio.CancelledError:  # close(): the batch in hand was not written
                self._abandon(batch, done)
                raise
            except Exception as exc:  # anything else too: the queue must never stop
                await self._drop()
                self.failures += 1
                if isinstance(exc, _RETRYABLE):
                    logger.warning("cluster: Redis unreachable (%s); retrying in %.2fs",
                                   type(exc).__name__, backoff)
                else:  # e.g. SCRIPT LOAD refused (NOPERM after an ACL change), a bad AUTH
                    logger.error("cluster: Redis command queue failed (%s: %s); retrying "
                                 "in %.2fs", type(exc).__name__, exc, backoff)
                self._requeue(batch, cmds, done)
                now = loop.time()
                failing_since = failing_since or now
                if self.down_since is None:
                    self.down_since = time.monotonic()
                if now - failing_since > self.stall_timeout:
                    self.stalled = True
                    self._fail_waiters()  # the commands stay queued; only waiters give up
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                batch, cmds, done = self._take()
                outcome = None
        self._task = None
        self.down_since, self.stalled = None, False
        self._deliver(batch, results, done)
        self._kick()

    def _requeue(self, batch: List[Item], cmds: int,
                 done: Optional[asyncio.Future[None]]) -> None:
        """Put a failed batch back in front; its completion future resolves with the
        queue's current one if commands were queued behind it meanwhile (they have theirs,
        which ``written()`` already handed out: both must resolve)."""
        self._pending[:0] = batch
        self._pending_cmds += cmds
        if done is None or done.done():
            return
        later = self._batch_done
        if later is None:
            self._batch_done = done
        else:
            later.add_done_callback(partial(_resolve_like, done))

    def _deliver(self, batch: List[Item], results: List[Any],
                 done: Optional[asyncio.Future[None]]) -> None:
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
        stalled = QueueStalled(f"Redis did not confirm within {self.stall_timeout:g}s (what "
                               "is queued for it is written when it is back)")
        patient = self._patient
        for _args, fut in self._pending:
            if fut is not None and not fut.done() and fut not in patient:
                fut.set_exception(stalled)
        for done in (self._batch_done, self._last_done):
            if done is not None and not done.done():
                done.set_exception(stalled)
        self._batch_done = None  # later commands get a fresh completion future
        if self.on_stall is not None:
            self.on_stall(stalled)

    def _pack_batch(self, batch: List[Item]) -> bytes:
        """The batch's RESP (a script call names the script: its SHA is written)."""
        out: List[bytes] = []
        scripts = self._scripts
        for args, _fut in batch:
            head = args[0]
            if head == "MULTI":
                out.append(_MULTI)
                for cmd in args[1:]:
                    if cmd.__class__ is Packed:
                        out.append(cmd.data)
                    else:
                        pack_into(out, cmd)
                out.append(_EXEC)
            elif head == "EVALSHA":
                pack_into(out, ("EVALSHA", scripts[args[1]].sha, *args[2:]))
            else:
                pack_into(out, args)
        return b"".join(out)

    async def _settle(self, batch: List[Item], replies: List[Any], errors: bool) -> List[Any]:
        """One result per item from a batch's replies.

        A script Redis no longer has (``SCRIPT FLUSH``; a restart is a reconnect, which
        loads them) is loaded and that item alone runs again: the batch's other items ran,
        and a transaction must not append twice. A ``LOADING`` answer (a restarted Redis
        still reading its AOF) ran nothing: raised, the batch is retried with backoff."""
        results = self._results(batch, replies)
        if not errors:
            return results  # no error reply at all (the usual batch): nothing to look for
        lost = [n for n, result in enumerate(results) if _is_noscript(result)]
        if lost:
            await self.load_scripts()
            again = [batch[n] for n in lost]  # script calls: never inside a transaction
            replies, _errors = await self._send(again, len(again))
            for n, result in zip(lost, self._results(again, replies)):
                results[n] = result
        for result in results:
            if isinstance(result, RedisConnectionError):
                raise result
        return results

    async def _send(self, batch: List[Item], cmds: int) -> Tuple[List[Any], bool]:
        """One round trip of the batch's commands (connecting first if need be): their
        ``cmds`` replies, and whether any is an error reply."""
        data = self._pack_batch(batch)
        started = time.monotonic()
        try:
            link = self._link
            if link is None or not link.connected:
                link = await self._open()
            errors = link.replies.errors
            replies = await link.send(data, cmds)
        except BaseException as exc:
            await self._drop()
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Redis connection lost: {exc}") from exc
            raise
        self._counted(cmds, started)
        return replies, link.replies.errors != errors

    async def _drop(self) -> None:
        lost, self._link = self._link, None
        if lost is not None:
            await lost.drop()

    def _counted(self, cmds: int, started: float) -> None:
        self.commands += cmds
        self.batches += 1
        elapsed = time.monotonic() - started
        self.rtt = elapsed if not self.rtt else self.rtt * 0.9 + elapsed * 0.1

    @staticmethod
    def _results(batch: List[Item], replies: List[Any]) -> List[Any]:
        """One result per item: a transaction's is EXEC's reply, or why it was refused."""
        if len(replies) == len(batch):
            return replies  # no transaction in the batch
        results: List[Any] = []
        at = 0
        for args, _fut in batch:
            if args[0] == "MULTI":
                size = _size(args)
                at += size
                result = replies[at - 1]  # EXEC's reply
                if isinstance(result, ResponseError):  # aborted: say why (OOM, LOADING...)
                    result = next((r for r in replies[at - size + 1:at - 1]
                                   if isinstance(r, RedisError)), result)
                results.append(result)
            else:
                results.append(replies[at])
                at += 1
        return results


def _needs_recovery(result: Any) -> bool:
    """A result the slow path handles: a flushed script, a Redis not ready (LOADING)."""
    return isinstance(result, RedisConnectionError) or _is_noscript(result)


def _is_noscript(result: Any) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT"))
