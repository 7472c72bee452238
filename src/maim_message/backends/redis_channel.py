"""A node's subscribed channel connection to one Redis: each payload handed on as read.

redis-py's ``PubSub.get_message`` (its pure-Python RESP parser, a timeout context per
read) and a queue hop to another task cost a few tens of us per channel message, ~1 us
per relayed message. Here redis-py only opens the connection (AUTH, SELECT, TLS, unix
sockets, the RESP2 handshake); then its transport is read by :class:`RedisChannel`, an
``asyncio.Protocol`` (:func:`adopt`, as the command queue's ``redis_link`` does): each
read goes through a sans-I/O reply parser (``resp_codec``: hiredis's or ``resp_reader``; wrapped by
:class:`Subscription`) and its payloads are handed to ``on_message`` in ``data_received``,
in order: no task wake-up, no stream buffer copy, no queue.

A lost connection (EOF, a reset, ``CLIENT KILL TYPE pubsub``, a Redis restart, bytes that
are not RESP) is reconnected with backoff (0.05 s doubling to 2 s) by :meth:`RedisChannel.run`
and subscribed again; once its last channel is confirmed ``on_resubscribed`` runs once:
what was published meanwhile is missing and must be read from the store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, List, Optional, Sequence

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ClusterError
from ..transport.write_batch import write_batch
from .redis_link import AdoptedProtocol, adopt, check_connection
from .resp_codec import RespReader
from .resp_pack import pack
from .resp_reader import RespProtocolError

__all__ = ["RedisChannel", "Subscription"]

logger = logging.getLogger(__name__)

FIRST_BACKOFF, MAX_BACKOFF = 0.05, 2.0  # s: between reconnects (doubling)
_LOST = (RedisError, OSError, ClusterError)  # ClusterError: RespProtocolError, bad streams
_MESSAGE = b"message"
_SUBSCRIBE = b"subscribe"
_PING = pack(("PING",))  # on a subscribed connection answered with ["pong", ""]


class Subscription:
    """Sans-I/O: what a subscribed connection's bytes say.

    :meth:`request` is the SUBSCRIBE to write on a fresh connection; :meth:`feed` takes
    bytes as they arrive, in any split, and returns the channel payloads in order while
    counting the subscribe confirmations (``subscribed`` once every channel has one). An
    error reply (say an ACL refusing a channel) raises RedisConnectionError; bytes that
    are not RESP2 raise RespProtocolError: either way the connection is to be dropped.
    """

    __slots__ = ("_replies", "channels", "completed_at", "confirmed")

    def __init__(self, channels: Sequence[str]) -> None:
        if not channels:
            raise ValueError("a subscription needs at least one channel")
        self.channels = tuple(channels)
        self.confirmed = 0
        # in the last feed: how many of its payloads came before the confirmation that
        # completed the subscription (-1: it did not complete there)
        self.completed_at = -1
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
        self.completed_at = -1
        for reply in replies.take():
            # ["message", channel, payload]: the hot path, checked first
            if type(reply) is list and len(reply) == 3 and reply[0] == _MESSAGE:
                out.append(reply[2])
            elif self._control(reply) and self.confirmed == len(self.channels):
                self.completed_at = len(out)
        return out

    def _control(self, reply: Any) -> bool:
        """True for a subscribe confirmation."""
        if isinstance(reply, Exception):
            raise RedisConnectionError(
                f"Redis refused the subscription: {type(reply).__name__}: {reply}")
        if type(reply) is list and reply and reply[0] == _SUBSCRIBE:
            self.confirmed += 1
            return True
        return False  # anything else (an unsubscribe, a pong) asks nothing of us


OnMessage = Callable[[bytes], None]
OnResubscribed = Callable[[], None]


class RedisChannel(AdoptedProtocol):
    """One subscribed connection to a Redis: :meth:`open` (subscribed before the node
    announces itself), then :meth:`run` hands on what arrived meanwhile and reconnects
    for good; :meth:`close` disconnects (after the task running ``run`` was cancelled).

    A connection that goes silent without closing (a proxy or NAT that dropped it, an
    address that moved to a new primary after a failover) would never be noticed: a
    subscriber only reads. So a connection idle for ``keepalive`` seconds gets a PING,
    and one still silent ``keepalive`` seconds later is dropped and reconnected (then
    re-read, as after any reconnect). One self-rearming timer per connection."""

    keepalive = 5.0  # s

    def __init__(self, redis: Redis, channels: Sequence[str], on_message: OnMessage,
                 on_resubscribed: OnResubscribed, name: str) -> None:
        self.name = name  # for logs: never the URL's password
        self.reconnects = 0
        conn = self._conn = redis.connection_pool.make_connection()
        check_connection(conn)
        self._sub = Subscription(channels)
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._transport: Optional[asyncio.Transport] = None
        self._subscribed = False  # this connection's channels are all confirmed
        self._opening: Optional[asyncio.Future[None]] = None  # open()'s wait
        self._lost: Optional[asyncio.Future[Exception]] = None  # run()'s wait
        self._why: Optional[Exception] = None  # why we dropped the connection
        self._held: Optional[List[bytes]] = []  # payloads until run() (None: hand on)
        self._backoff = FIRST_BACKOFF
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._heard = 0.0  # loop time of the last bytes read
        self._pinged = False  # a PING is out, unanswered
        self._watchdog: Optional[asyncio.TimerHandle] = None

    async def open(self, timeout: float = 5.0) -> None:
        """Connect, subscribe and wait (``timeout``) for every channel's confirmation."""
        opening = self._opening = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._connect(opening), timeout)
        except asyncio.TimeoutError:
            await self._conn.disconnect(nowait=True)
            raise RedisTimeoutError(f"no subscribe confirmation within {timeout:g}s") from None
        except RespProtocolError as exc:
            await self._conn.disconnect(nowait=True)
            raise RedisConnectionError(f"not a Redis reply: {exc}") from exc
        except BaseException:
            await self._conn.disconnect(nowait=True)
            raise
        finally:
            self._opening = None
            if opening.done() and not opening.cancelled():
                opening.exception()  # retrieved, whoever failed first

    async def close(self) -> None:
        """Disconnect; what arrives from now on is dropped."""
        self._held = []
        self._disarm()
        await self._conn.disconnect()

    async def _connect(self, confirmed: Optional[asyncio.Future[None]] = None) -> None:
        """Connect and write SUBSCRIBE (the confirmations arrive in ``data_received``);
        ``confirmed``: wait for them too."""
        self._subscribed = False
        self._why = None
        self._lost = asyncio.get_running_loop().create_future()
        request = self._sub.request()
        transport, self._streams, leftover = await adopt(self._conn, self)
        self._transport = transport
        loop = self._loop = asyncio.get_running_loop()
        self._heard, self._pinged = loop.time(), False
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._heard + self.keepalive, self._watch)
        transport.write(request)
        if leftover:
            self.data_received(leftover)
        if confirmed is not None:
            await confirmed

    async def run(self) -> None:
        """Hand on what arrived since :meth:`open`, then reconnect whenever the connection
        is lost, for good (payloads are handed on by ``data_received``)."""
        held, self._held = self._held, None
        if held:
            self._deliver(held)
        while True:
            lost = self._lost
            assert lost is not None
            why: BaseException = await lost
            while True:
                logger.warning("cluster: channel connection to %s lost (%s); reconnecting "
                               "in %.2fs", self.name, type(why).__name__, self._backoff)
                await self._conn.disconnect(nowait=True)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
                try:
                    await self._connect()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # still away (or a bug): again, later
                    if not isinstance(exc, _LOST):
                        logger.exception("cluster: reconnecting to %s failed", self.name)
                    why = exc

    # -- asyncio.Protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._loop is not None:
            self._heard = self._loop.time()
            self._pinged = False
        sub = self._sub
        try:
            payloads = sub.feed(data)
        except (RespProtocolError, RedisConnectionError) as exc:  # out of step, or refused
            self._why = exc
            if self._transport is not None:
                self._transport.abort()  # connection_lost follows
            return
        at = sub.completed_at
        if at >= 0 and not self._subscribed:
            # the re-subscription completed in this read: what came after it may be newer
            # than what the re-read it starts finds, so the re-read is asked for first
            self._hand_on(payloads[:at])
            self._confirmed()
            self._hand_on(payloads[at:])
        else:
            self._hand_on(payloads)
            if not self._subscribed and sub.subscribed:
                self._confirmed()

    def _hand_on(self, payloads: List[bytes]) -> None:
        if payloads:
            held = self._held
            if held is not None:
                held += payloads
            else:
                self._deliver(payloads)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._transport = None
        self._subscribed = False
        self._disarm()
        why = self._why or RedisConnectionError(
            f"channel connection lost: {exc}" if exc else "Redis closed the channel connection")
        opening, lost = self._opening, self._lost
        if opening is not None and not opening.done():
            opening.set_exception(why)  # open() fails with it
        if lost is not None and not lost.done():
            lost.set_result(why)  # run() reconnects
        self._release_streams(exc)

    # -- internals ---------------------------------------------------------------------------

    def _confirmed(self) -> None:
        """The last channel's confirmation: open() returns, or (a reconnect) the owner
        re-reads what may have been missed, once."""
        self._subscribed = True
        self._backoff = FIRST_BACKOFF
        opening = self._opening
        if opening is not None:
            if not opening.done():
                opening.set_result(None)
            return
        self.reconnects += 1
        try:
            self._on_resubscribed()
        except Exception:
            logger.exception("cluster: re-reading after %s reconnected failed", self.name)

    def _watch(self) -> None:
        """Keepalive: PING an idle connection; drop one that stayed silent since."""
        self._watchdog = None
        transport, loop = self._transport, self._loop
        if transport is None or loop is None:
            return
        now = loop.time()
        if now - self._heard >= self.keepalive:
            if self._pinged:
                self._why = RedisTimeoutError(
                    f"channel connection silent for {2 * self.keepalive:g}s")
                transport.abort()  # connection_lost follows: run() reconnects
                return
            transport.write(_PING)
            self._pinged = True
            self._heard = now  # the answer is due within another keepalive
        self._watchdog = loop.call_at(self._heard + self.keepalive, self._watch)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _deliver(self, payloads: List[bytes]) -> None:
        on_message = self._on_message
        with write_batch:  # a read's messages leave in one write per receiving connection
            for payload in payloads:
                try:
                    on_message(payload)
                except Exception:  # a bad message never stops the reader
                    logger.exception("cluster: handling a channel message failed")
