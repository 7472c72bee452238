"""The command queue's data path: one Redis connection read by our own asyncio protocol.

redis-py opens the connection (AUTH, SELECT, TLS, unix sockets, the RESP2 handshake); then
its transport is handed to :class:`RespLink`, whose ``data_received`` feeds the RESP parser
and resolves the batch in flight as soon as its last reply is parsed. Compared with reading
redis-py's ``StreamReader`` this saves, per round trip, a read task wake-up per chunk, the
stream's buffer copies and a timer: one watchdog per connection re-arms itself while batches
are in flight instead of a timer armed and cancelled per round trip.

redis-py's own stream protocol still learns of the close (``connection_lost`` is passed on),
so its ``disconnect()`` works as before; and the connection's ``_writer`` is only used to
find the transport. One batch at a time is in flight: replies come in order, the queue
writes the next batch once the last one's replies are in.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Callable, List, Optional, Tuple

import redis as redis_py
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterError
from .resp_codec import RespReader
from .resp_reader import RespProtocolError

__all__ = ["Landed", "RespLink", "check_connection"]

Landed = Callable[[Optional[List[Any]], Optional[Exception]], None]
"""Called with a batch's replies, or with why it failed."""


def _resolve(fut: asyncio.Future[List[Any]], replies: Optional[List[Any]],
             error: Optional[Exception]) -> None:
    if fut.done():  # cancelled: its waiter is gone
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(replies or [])


def check_connection(conn: Any) -> None:
    """Refuse, at start-up, a redis-py whose asyncio connection this module cannot use."""
    if not (hasattr(conn, "_reader") and hasattr(conn, "_writer")):
        raise ClusterError(
            f"redis-py {redis_py.__version__}: its asyncio connection has no "
            "_reader/_writer streams, which the cluster's command queue takes the "
            "transport from (redis-py 5 to 8 have them)")
    if getattr(conn, "protocol", 2) not in (2, "2", None):
        raise ClusterError("the cluster's command queue needs RESP2 (protocol=2)")


async def adopt(conn: Any, protocol: asyncio.BaseProtocol
                ) -> Tuple[asyncio.Transport, asyncio.BaseProtocol, bytes]:
    """Connect ``conn`` through redis-py (its handshake), then make ``protocol`` read its
    transport. Returns the transport, redis-py's own protocol (``protocol`` passes
    ``connection_lost`` on to it, so that redis-py's ``disconnect()`` still works) and
    what redis-py had read beyond the handshake (nothing, normally)."""
    await conn.connect()
    reader, writer = conn._reader, conn._writer
    if not (isinstance(reader, asyncio.StreamReader)
            and isinstance(writer, asyncio.StreamWriter)):
        await conn.disconnect()
        raise ClusterError(f"redis-py {redis_py.__version__}: its connection's "
                           "_reader/_writer are not asyncio streams")
    transport = writer.transport
    streams = transport.get_protocol()
    leftover = bytes(getattr(reader, "_buffer", b""))
    transport.set_protocol(protocol)
    if transport.is_closing():  # lost while redis-py still held it
        await conn.disconnect(nowait=True)
        raise RedisConnectionError("Redis closed the connection after the handshake")
    return transport, streams, leftover  # type: ignore[return-value]


class AdoptedProtocol(asyncio.Protocol):
    """A protocol on a transport redis-py opened (:func:`adopt`): flow control and the
    close are passed on to redis-py's own stream protocol (its ``disconnect()`` waits for
    that close)."""

    _streams: Optional[asyncio.BaseProtocol] = None  # redis-py's, set by adopt's caller

    def _release_streams(self, exc: Optional[Exception]) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._streams is not None:
            self._streams.pause_writing()

    def resume_writing(self) -> None:
        if self._streams is not None:
            self._streams.resume_writing()


class RespLink(AdoptedProtocol):
    """One connection opened by redis-py, read by us (a new link per connection, so that
    a dropped connection's late callbacks touch nothing of the next one): ``send`` writes
    one batch and returns a future of its ``count`` replies (exceptions for error replies,
    as ``RespReader`` gives them).

    The future fails with ``RedisConnectionError`` if the connection is lost,
    ``RedisTimeoutError`` if Redis sent nothing for ``reply_timeout`` s (the connection is
    dropped then) or ``RespProtocolError`` if the bytes are not RESP2 replies to our
    commands (dropped as well)."""

    def __init__(self, conn: Any, reply_timeout: float) -> None:
        self.reply_timeout = reply_timeout
        self.replies = RespReader()
        self.timed_out = False  # dropped by the watchdog
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._transport: Optional[asyncio.Transport] = None
        self._then: Optional[Landed] = None  # the batch in flight's callback
        self._want = 0
        self._got: List[Any] = []
        self._heard = 0.0  # loop time the flight was written or Redis last sent bytes
        self._watchdog: Optional[asyncio.TimerHandle] = None

    @classmethod
    async def open(cls, conn: Any, reply_timeout: float) -> RespLink:
        """Connect through redis-py (which must not be connected), then read the
        connection ourselves."""
        link = cls(conn, reply_timeout)
        transport, link._streams, leftover = await adopt(conn, link)
        link.replies.feed(leftover)  # none after a handshake
        link._transport = transport
        return link

    @property
    def connected(self) -> bool:
        return self._transport is not None

    async def drop(self) -> None:
        """Abort the connection now (a failed batch's partial replies are void)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        self._fail(RedisConnectionError("Redis connection dropped"))
        self._disarm()
        await self._conn.disconnect(nowait=True)

    async def close(self) -> None:
        """Close the connection; waits for the close, as redis-py's ``disconnect``."""
        self._disarm()
        await self._conn.disconnect()

    def send(self, data: bytes, count: int) -> asyncio.Future[List[Any]]:
        """Write a batch; the future resolves with its ``count`` replies in order."""
        fut: asyncio.Future[List[Any]] = self._loop.create_future()
        self.send_then(data, count, partial(_resolve, fut))
        return fut

    def send_then(self, data: bytes, count: int, then: Landed) -> None:
        """Write a batch; ``then(replies, None)`` is called from ``data_received`` as its
        last reply is parsed, or ``then(None, error)`` when it fails."""
        transport, loop = self._transport, self._loop
        if transport is None:
            raise RedisConnectionError("the command queue's connection is not open")
        assert self._then is None, "one batch in flight at a time"
        self._then = then
        self._want = count
        self._got = []
        self._heard = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._heard + self.reply_timeout, self._watch)
        transport.write(data)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._heard = self._loop.time()
        parser = self.replies
        parser.feed(data)
        then = self._then
        try:
            if then is None:
                raise RespProtocolError(f"a reply to no command: {data[:32]!r}")
            got = self._got
            if got:
                got += parser.take(self._want - len(got))
            else:
                got = self._got = parser.take(self._want)
            if len(got) < self._want:
                return
            if parser.has_unread:
                raise RespProtocolError("more replies than commands")
        except RespProtocolError as exc:
            self._fail(exc)
            if self._transport is not None:
                self._transport.abort()
            return
        self._then = None
        self._got = []
        then(got, None)  # may send the next batch: nothing of this one is touched after

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._transport = None
        self._disarm()
        if self.timed_out:
            self._fail(RedisTimeoutError(f"Redis sent nothing for {self.reply_timeout:g}s "
                                         "mid-batch"))
        else:
            self._fail(RedisConnectionError(f"Redis connection lost: {exc}" if exc else
                                            "Redis closed the connection mid-batch"))
        self._release_streams(exc)

    def resume_writing(self) -> None:
        self._heard = self._loop.time()  # Redis read what we wrote: it is not silent
        super().resume_writing()

    # -- internals ---------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        then, self._then = self._then, None
        self._got = []
        if then is not None:
            then(None, exc)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _watch(self) -> None:
        """The one watchdog: re-arms while batches are in flight, drops a silent Redis."""
        self._watchdog = None
        loop, transport = self._loop, self._transport
        if self._then is None or transport is None:
            return  # idle: the next send arms it again
        due = self._heard + self.reply_timeout
        if loop.time() < due:
            self._watchdog = loop.call_at(due, self._watch)
            return
        self.timed_out = True
        transport.abort()  # connection_lost fails the flight with RedisTimeoutError
