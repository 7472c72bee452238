"""The cluster's channel connection (``redis_channel.RedisChannel``) on sockets: a fake
Redis for the faults (a cut, garbage, no confirmation), a real redis-server for a restart,
an undecodable message and a clean stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any, AsyncIterator, List, Optional

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from maim_message.backends import redis_channel
from maim_message.backends.redis_channel import RedisChannel
from maim_message.backends.redis_keys import Keys
from maim_message.backends.resp_reader import RespReader

from .conftest import free_port
from .helpers_api import make_message
from .test_cluster import Receiver, node, redis_asyncio, started
from .test_cluster_exactly_once import AofRedis
from .test_redis_channel_units import confirmation, message

pytestmark = pytest.mark.timeout(60)


class ChannelRedis:
    """A fake Redis on a free port: +OK to the handshake, a confirmation per channel of a
    SUBSCRIBE (unless ``confirm`` is off); ``send`` writes to the newest subscriber."""

    def __init__(self, confirm: bool = True) -> None:
        self.confirm = confirm
        self.port = free_port()
        self.subscribes: List[List[bytes]] = []  # each SUBSCRIBE's channels
        self.subscribed = asyncio.Event()
        self.hung_up = asyncio.Event()  # a client connection ended
        self.pings = 0
        self.with_confirmation = b""  # sent in the same write as the confirmations
        self.muted: List[asyncio.StreamWriter] = []  # connections it no longer answers
        self._writers: List[asyncio.StreamWriter] = []
        self._server: Optional[asyncio.AbstractServer] = None

    async def __aenter__(self) -> ChannelRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()

    def send(self, data: bytes) -> None:
        self._writers[-1].write(data)

    def cut(self) -> None:
        self._writers[-1].close()

    def mute(self) -> None:
        """The newest connection goes silent without closing (a proxy that dropped it)."""
        self.muted.append(self._writers[-1])

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        commands = RespReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                commands.feed(data)
                if writer in self.muted:
                    continue
                for command in commands.take():
                    if command[0].upper() == b"PING":
                        self.pings += 1
                    if command[0].upper() != b"SUBSCRIBE":
                        writer.write(b"+OK\r\n")  # AUTH, CLIENT SETINFO ...
                        continue
                    channels = command[1:]
                    self.subscribes.append(channels)
                    self._writers.append(writer)
                    if self.confirm:
                        writer.write(b"".join(confirmation(c, n + 1)
                                              for n, c in enumerate(channels))
                                     + self.with_confirmation)
                    self.subscribed.set()
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            self.hung_up.set()


class Recorder:
    """on_message / on_resubscribed of a channel under test."""

    def __init__(self, fail_on: bytes = b"") -> None:
        self.payloads: List[bytes] = []
        self.events: List[bytes] = []  # payloads and re-subscriptions, in order
        self.resubscribed = 0
        self.changed = asyncio.Event()
        self.fail_on = fail_on

    def on_message(self, payload: bytes) -> None:
        self.payloads.append(payload)
        self.events.append(payload)
        self.changed.set()
        if payload == self.fail_on:
            raise RuntimeError("handler failed")

    def on_resubscribed(self) -> None:
        self.resubscribed += 1
        self.events.append(b"<resubscribed>")
        self.changed.set()

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def channel_of() -> AsyncIterator[Any]:
    """Opens channels on a URL; closes them (and their reader tasks) at the end."""
    made: List[Any] = []

    async def open_one(url: str, recorder: Recorder, channels: List[str],
                       timeout: float = 5.0, keepalive: float = 0.0) -> RedisChannel:
        redis = redis_asyncio.Redis.from_url(url, protocol=2)
        channel = RedisChannel(redis, channels, recorder.on_message,
                               recorder.on_resubscribed, "shard 0 (test)")
        if keepalive:
            channel.keepalive = keepalive
        made.append((redis, channel, None))
        await channel.open(timeout=timeout)
        made[-1] = (redis, channel, asyncio.ensure_future(channel.run()))
        return channel

    yield open_one
    for redis, channel, task in made:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await channel.close()
        await redis.aclose()


async def test_payloads_arrive_in_order_and_a_failing_handler_stops_nothing(
        channel_of: Any, caplog: pytest.LogCaptureFixture) -> None:
    async with ChannelRedis() as fake:
        got = Recorder(fail_on=b"boom")
        await channel_of(f"redis://127.0.0.1:{fake.port}/0", got, ["p:n:a", "p:all"])
        assert fake.subscribes == [[b"p:n:a", b"p:all"]]
        fake.send(message(b"p:n:a", b"one") + message(b"p:all", b"boom"))
        fake.send(message(b"p:n:a", b"three"))
        await got.until(lambda: len(got.payloads) == 3)
        assert got.payloads == [b"one", b"boom", b"three"]
        assert "handling a channel message failed" in caplog.text
        assert got.resubscribed == 0  # the first subscription is no reconnect


async def test_what_arrives_before_the_node_reads_is_handed_on_when_it_does() -> None:
    async with ChannelRedis() as fake:
        got = Recorder()
        redis = redis_asyncio.Redis.from_url(f"redis://127.0.0.1:{fake.port}/0", protocol=2)
        channel = RedisChannel(redis, ["c"], got.on_message, got.on_resubscribed, "test")
        task = None
        try:
            await channel.open()
            fake.send(message(b"c", b"early") + message(b"c", b"second"))
            await asyncio.sleep(0.2)  # read by now, but the node has not started reading
            assert got.payloads == []
            task = asyncio.ensure_future(channel.run())
            fake.send(message(b"c", b"live"))
            await got.until(lambda: len(got.payloads) == 3)
            assert got.payloads == [b"early", b"second", b"live"]
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await channel.close()
            await redis.aclose()


@pytest.mark.parametrize("fault", ["cut", "garbage", "refusal"])
async def test_a_lost_connection_is_subscribed_again_and_re_read_once(
        channel_of: Any, caplog: pytest.LogCaptureFixture, fault: str) -> None:
    caplog.set_level(logging.WARNING, logger=redis_channel.__name__)
    async with ChannelRedis() as fake:
        got = Recorder()
        channel = await channel_of(f"redis://:sekret@127.0.0.1:{fake.port}/0", got,
                                   ["p:n:a", "p:all"])
        fake.send(message(b"p:n:a", b"before"))
        await got.until(lambda: got.payloads == [b"before"])
        if fault == "cut":
            fake.cut()
        elif fault == "garbage":
            fake.send(b"!not resp\r\n")
        else:
            fake.send(b"-ERR something went wrong\r\n")
        await got.until(lambda: got.resubscribed == 1)
        assert fake.subscribes == [[b"p:n:a", b"p:all"]] * 2
        fake.send(message(b"p:all", b"after"))
        await got.until(lambda: got.payloads == [b"before", b"after"])
        await asyncio.sleep(0.2)  # a second re-read would have happened by now
        assert got.resubscribed == 1 and channel.reconnects == 1
        assert "channel connection to shard 0 (test) lost" in caplog.text
        assert "reconnecting in 0.05s" in caplog.text
        assert "sekret" not in caplog.text


async def test_no_confirmation_fails_the_open_in_bounded_time(channel_of: Any) -> None:
    async with ChannelRedis(confirm=False) as fake:
        started_at = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError, match="no subscribe confirmation"):
            await channel_of(f"redis://127.0.0.1:{fake.port}/0", Recorder(), ["c"],
                             timeout=0.3)
        assert asyncio.get_running_loop().time() - started_at < 3
        await asyncio.wait_for(fake.hung_up.wait(), 5)  # its connection was closed


# -- real redis-server ---------------------------------------------------------------------


@pytest.fixture
async def restartable(tmp_path: Path) -> AsyncIterator[AofRedis]:
    server = AofRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_redis_restart_re_subscribes_and_the_node_goes_on(
        restartable: AofRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="maim_message.backends")
    sender, holder = node(restartable.url, "s"), node(restartable.url, "h")
    await started(sender, holder)
    receiver = Receiver(holder.port or 0, "bob")
    try:
        assert await receiver.client.connect()
        await sender.send_message(make_message("before", "bob", "qq"))
        await receiver.wait(lambda: "before" in receiver.texts)
        stats: Any = holder.cluster.stats  # type: ignore[union-attr]
        before = stats()["resyncs"]
        restartable.stop(signal.SIGKILL)
        await restartable.start()
        deadline = asyncio.get_running_loop().time() + 20
        while "channel to shard 0 reconnected" not in caplog.text:
            assert asyncio.get_running_loop().time() < deadline, "no re-read after restart"
            await asyncio.sleep(0.05)
        assert stats()["resyncs"] > before
        assert "channel connection to shard 0" in caplog.text
        await sender.send_message(make_message("after", "bob", "qq"))
        await receiver.wait(lambda: "after" in receiver.texts, timeout=20)
    finally:
        await receiver.client.stop()
        await sender.stop()
        await holder.stop()


async def test_an_undecodable_channel_message_is_dropped_and_the_next_one_handled(
        restartable: AofRedis, caplog: pytest.LogCaptureFixture) -> None:
    sender, holder = node(restartable.url, "s"), node(restartable.url, "h")
    await started(sender, holder)
    receiver = Receiver(holder.port or 0, "bob")
    admin = redis_asyncio.Redis.from_url(restartable.url)
    try:
        assert await receiver.client.connect()
        channel = Keys("maim_hub").channel("h")
        for junk in (b"not json", b'{"type":"pairs","origin":"x","groups":3}\n',
                     b"\xff\xfe", b'{"type":"nonsense"}'):
            assert await admin.publish(channel, junk) == 1  # the holder is subscribed
        await sender.send_message(make_message("fine", "bob", "qq"))
        await receiver.wait(lambda: "fine" in receiver.texts)
        dropped = [r for r in caplog.records if "undecodable channel message" in r.message]
        assert len(dropped) == 4
    finally:
        await admin.aclose()
        await receiver.client.stop()
        await sender.stop()
        await holder.stop()


async def test_stopped_nodes_leave_no_channel_connection(restartable: AofRedis) -> None:
    admin = redis_asyncio.Redis.from_url(restartable.url)
    try:
        nodes = await started(node(restartable.url, "a"), node(restartable.url, "b"))
        assert len(await admin.client_list(_type="pubsub")) == 2
        for server in nodes:
            await server.stop()
        deadline = asyncio.get_running_loop().time() + 5
        while await admin.client_list(_type="pubsub"):
            assert asyncio.get_running_loop().time() < deadline, "a channel is still open"
            await asyncio.sleep(0.02)
        assert [c["name"] for c in await admin.client_list()] == [""]  # only this client
    finally:
        await admin.aclose()


async def test_a_connection_gone_silent_is_noticed_by_its_keepalive_and_replaced(
        channel_of: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A subscriber only reads: a connection that stops carrying anything without closing
    (a proxy or NAT that dropped it, an address moved to a new primary) would be kept for
    hours. An idle one gets a PING; one still silent a keepalive later is reconnected
    and its pairs re-read. An answered PING keeps the connection."""
    caplog.set_level(logging.WARNING, logger=redis_channel.__name__)
    async with ChannelRedis() as fake:
        got = Recorder()
        await channel_of(f"redis://127.0.0.1:{fake.port}/0", got, ["c"], keepalive=0.1)
        await asyncio.sleep(0.5)  # idle: pinged, answered, kept
        assert fake.pings >= 2 and got.resubscribed == 0
        fake.mute()
        await got.until(lambda: got.resubscribed == 1, timeout=5)
        assert len(fake.subscribes) == 2 and "TimeoutError" in caplog.text
        fake.send(message(b"c", b"after"))  # on the new connection
        await got.until(lambda: got.payloads == [b"after"])


async def test_a_real_redis_answers_the_keepalive_of_an_idle_channel(
        channel_of: Any, restartable: AofRedis) -> None:
    got = Recorder()
    channel = await channel_of(restartable.url, got, ["c"], keepalive=0.1)
    await asyncio.sleep(0.6)  # several PINGs, each answered with a pong
    assert got.resubscribed == 0 and channel.reconnects == 0
    redis = redis_asyncio.Redis.from_url(restartable.url)
    try:
        await redis.publish("c", b"still here")
    finally:
        await redis.aclose()
    await got.until(lambda: got.payloads == [b"still here"])


async def test_a_message_read_with_the_last_confirmation_comes_after_the_re_read_request(
        channel_of: Any) -> None:
    """Under load the last confirmation of a re-subscription and a newly published message
    arrive in one read: the re-read (which holds the pair's channel messages until it has
    delivered what the stream kept) must be asked for before that message is handed on,
    or it would go out before older messages the re-read then delivers."""
    async with ChannelRedis() as fake:
        got = Recorder()
        await channel_of(f"redis://127.0.0.1:{fake.port}/0", got, ["c1", "c2"])
        fake.with_confirmation = message(b"c1", b"new")
        fake.cut()
        await got.until(lambda: got.payloads == [b"new"])
        assert got.events == [b"<resubscribed>", b"new"]
