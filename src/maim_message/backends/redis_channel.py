"""A node's subscribed channel connection to one Redis: each payload handed on as read.

redis-py's ``PubSub.get_message`` (its pure-Python RESP parser, a timeout context per
read) and a queue hop to another task cost a few tens of us per channel message, ~1 us
per relayed message. Here the connection's bytes go through the project's sans-I/O parser
(``resp_reader``: every message of a read from one buffer) and each payload is handed to
``on_message`` in the task that read it, in order. redis-py still makes the connection
(AUTH, SELECT, TLS, unix sockets, the RESP2 handshake): :func:`raw_connection` and
:func:`open_streams`, the same way the command queue gets its own.

A lost connection (EOF, a reset, ``CLIENT KILL TYPE pubsub``, a Redis restart) is
reconnected with backoff (0.05 s doubling to 2 s) and subscribed again; once its last
channel is confirmed ``on_resubscribed`` runs once: what was published meanwhile is
missing and must be read from the store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, List, Optional, Sequence, Tuple

import redis as redis_py
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterError
from .redis_link import check_connection
from .resp_pack import pack
from .resp_reader import RespProtocolError, RespReader

__all__ = ["RedisChannel", "Subscription", "open_streams", "raw_connection"]

logger = logging.getLogger(__name__)

READ_SIZE = 1 << 18
FIRST_BACKOFF, MAX_BACKOFF = 0.05, 2.0  # s: between reconnects (doubling)
_LOST = (RedisError, OSError, ClusterError)  # ClusterError: RespProtocolError, bad streams
_MESSAGE = b"message"
_SUBSCRIBE = b"subscribe"


def raw_connection(redis: Redis) -> Any:
    """A new, unconnected redis-py connection from ``redis``'s pool settings, outside the
    pool, whose streams we read and write RESP2 on ourselves (checked as the command
    queue's is)."""
    conn = redis.connection_pool.make_connection()
    check_connection(conn)
    return conn


async def open_streams(conn: Any) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect ``conn`` (redis-py's handshake: AUTH, SELECT, TLS) and return its streams."""
    await conn.connect()
    reader, writer = conn._reader, conn._writer
    if not (isinstance(reader, asyncio.StreamReader)
            and isinstance(writer, asyncio.StreamWriter)):
        await conn.disconnect()
        raise ClusterError(f"redis-py {redis_py.__version__}: its connection's "
                           "_reader/_writer are not asyncio streams")
    return reader, writer


class Subscription:
    """Sans-I/O: what a subscribed connection's bytes say.

    :meth:`request` is the SUBSCRIBE to write on a fresh connection; :meth:`feed` takes
    bytes as they arrive, in any split, and returns the channel payloads in order while
    counting the subscribe confirmations (``subscribed`` once every channel has one). An
    error reply (say an ACL refusing a channel) raises RedisConnectionError; bytes that
    are not RESP2 raise RespProtocolError: either way the connection is to be dropped.
    """

    __slots__ = ("_replies", "channels", "confirmed")

    def __init__(self, channels: Sequence[str]) -> None:
        if not channels:
            raise ValueError("a subscription needs at least one channel")
        self.channels = tuple(channels)
        self.confirmed = 0
        self._replies = RespReader()

    def request(self) -> bytes:
        """SUBSCRIBE to every channel (for a fresh connection: what was fed is void)."""
        self._replies.clear()
        self.confirmed = 0
        return pack(("SUBSCRIBE", *self.channels))

    @property
    def subscribed(self) -> bool:
        return self.confirmed >= len(self.channels)

    def feed(self, data: bytes) -> List[bytes]:
        """The channel payloads completed by ``data``, in order."""
        replies = self._replies
        replies.feed(data)
        out: List[bytes] = []
        for reply in replies.take():
            # ["message", channel, payload]: the hot path, checked first
            if type(reply) is list and len(reply) == 3 and reply[0] == _MESSAGE:
                out.append(reply[2])
            else:
                self._control(reply)
        return out

    def _control(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            raise RedisConnectionError(
                f"Redis refused the subscription: {type(reply).__name__}: {reply}")
        if type(reply) is list and reply and reply[0] == _SUBSCRIBE:
            self.confirmed += 1
        # anything else (an unsubscribe, a pong) asks nothing of us


OnMessage = Callable[[bytes], None]
OnResubscribed = Callable[[], None]


class RedisChannel:
    """One subscribed connection to a Redis: :meth:`open` (subscribed before the node
    announces itself), then :meth:`run` reads it for good; :meth:`close` ends both."""

    def __init__(self, redis: Redis, channels: Sequence[str], on_message: OnMessage,
                 on_resubscribed: OnResubscribed, name: str) -> None:
        self.name = name  # for logs: never the URL's password
        self.reconnects = 0
        self._conn = raw_connection(redis)
        self._sub = Subscription(channels)
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._reader: Optional[asyncio.StreamReader] = None
        self._early: List[bytes] = []  # payloads read with the confirmations at open()
        self._backoff = FIRST_BACKOFF

    async def open(self, timeout: float = 5.0) -> None:
        """Connect, subscribe and wait (``timeout``) for every channel's confirmation."""
        try:
            self._reader = await asyncio.wait_for(self._subscribe(confirmed=True), timeout)
        except asyncio.TimeoutError:
            await self._conn.disconnect(nowait=True)
            raise RedisTimeoutError(f"no subscribe confirmation within {timeout:g}s") from None
        except RespProtocolError as exc:
            await self._conn.disconnect(nowait=True)
            raise RedisConnectionError(f"not a Redis reply: {exc}") from exc
        except BaseException:
            await self._conn.disconnect(nowait=True)
            raise

    async def close(self) -> None:
        """Disconnect (the task running :meth:`run` is cancelled by its owner first)."""
        self._reader = None
        await self._conn.disconnect()

    async def _subscribe(self, confirmed: bool = False) -> asyncio.StreamReader:
        """Connect and write SUBSCRIBE; ``confirmed``: also read every confirmation."""
        reader, writer = await open_streams(self._conn)
        sub = self._sub
        writer.write(sub.request())
        await writer.drain()
        while confirmed and not sub.subscribed:
            self._early += sub.feed(await _chunk(reader))
        return reader

    async def run(self) -> None:
        """Hand every payload to ``on_message`` as it is read, reconnecting for good."""
        early, self._early = self._early, []
        self._deliver(early)
        while True:
            try:
                reader = self._reader
                if reader is None:
                    reader = self._reader = await self._subscribe()
                await self._read(reader)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost (or a bug): reconnect, the node keeps running
                if not isinstance(exc, _LOST):
                    logger.exception("cluster: channel reader of %s failed", self.name)
                logger.warning("cluster: channel connection to %s lost (%s); reconnecting "
                               "in %.2fs", self.name, type(exc).__name__, self._backoff)
                self._reader = None
                await self._conn.disconnect(nowait=True)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        sub = self._sub
        feed, deliver = sub.feed, self._deliver
        while True:
            chunk = await _chunk(reader)
            if sub.subscribed:
                deliver(feed(chunk))
                continue
            deliver(feed(chunk))  # a reconnect's confirmations (and what followed them)
            if sub.subscribed:  # the last channel's: once per reconnect
                self._backoff = FIRST_BACKOFF
                self.reconnects += 1
                try:
                    self._on_resubscribed()
                except Exception:
                    logger.exception("cluster: re-reading after %s reconnected failed",
                                     self.name)

    def _deliver(self, payloads: List[bytes]) -> None:
        on_message = self._on_message
        for payload in payloads:
            try:
                on_message(payload)
            except Exception:  # a bad message never stops the reader
                logger.exception("cluster: handling a channel message failed")


async def _chunk(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(READ_SIZE)
    if not data:
        raise RedisConnectionError("Redis closed the channel connection")
    return data
