"""Micro-benchmark: node CPU per cluster channel message, redis-py's PubSub against
``redis_channel``.

``python -m bench.redis_channel_micro [--messages N] [--per-message K] [--rounds R]``
starts a throwaway redis-server on 127.0.0.1 (a free port, no persistence), publishes N
``pairs`` channel messages of K relayed messages each (what a send batch publishes to a
node) while the subscriber does not read, then times (``time.process_time``: this
process only) reading and decoding them two ways: redis-py's ``PubSub.get_message`` into
an asyncio.Queue taken by another task (the cluster's old path) and ``RedisChannel``
handing each payload on as read (the new one). Prints CPU us per channel message and per
relayed message, best of R rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, Callable, List

from redis.asyncio import Redis

from bench.redis_server import redis_server
from maim_message.backends.pubsub_messages import PairMessage, decode_batch, encode_pair_groups
from maim_message.backends.redis_channel import RedisChannel

CHANNEL = "bench:n:a"


def _payload(per_message: int, serial: int) -> bytes:
    body = b"x" * 250  # about an encoded envelope
    sends = [PairMessage("b", f"user{serial}", "qq", f"m{serial}-{n}", "", body)
             for n in range(per_message)]
    return encode_pair_groups("b", [((f"user{serial}", "qq"), sends, f"{serial}-0")])


async def _publish(redis: Redis, payloads: List[bytes]) -> None:
    pipe = redis.pipeline(transaction=False)
    for payload in payloads:
        pipe.publish(CHANNEL, payload)
    assert all(n == 1 for n in await pipe.execute())


async def _old(redis: Redis, payloads: List[bytes]) -> float:
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
        pass
    await _publish(redis, payloads)
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    done = asyncio.Event()
    count = 0

    async def read() -> None:
        while True:
            msg = await pubsub.get_message(timeout=None)
            if msg is not None and msg.get("type") == "message":
                inbox.put_nowait(msg["data"])

    async def handle() -> None:
        nonlocal count
        while True:
            decode_batch(await inbox.get())
            count += 1
            if count == len(payloads):
                done.set()

    started = time.process_time()
    tasks = [asyncio.ensure_future(read()), asyncio.ensure_future(handle())]
    await done.wait()
    spent = time.process_time() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pubsub.aclose()
    return spent


async def _new(redis: Redis, payloads: List[bytes]) -> float:
    done = asyncio.Event()
    count = 0

    def on_message(data: bytes) -> None:
        nonlocal count
        decode_batch(data)
        count += 1
        if count == len(payloads):
            done.set()

    channel = RedisChannel(redis, [CHANNEL], on_message, lambda: None, "bench")
    await channel.open()
    transport = channel._transport  # it reads as bytes arrive: not while publishing
    assert transport is not None
    transport.pause_reading()
    await _publish(redis, payloads)
    started = time.process_time()
    transport.resume_reading()
    task = asyncio.ensure_future(channel.run())
    await done.wait()
    spent = time.process_time() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await channel.close()
    return spent


def _decode_only(payloads: List[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for payload in payloads:
            decode_batch(payload)
        best = min(best, time.process_time() - started)
    return best / len(payloads) * 1e6


async def _best(run: Callable[[Redis, List[bytes]], Any], redis: Redis,
                payloads: List[bytes], rounds: int) -> float:
    return min([await run(redis, payloads) for _ in range(rounds)]) / len(payloads) * 1e6


async def _main(messages: int, per_message: int, rounds: int) -> None:
    async with redis_server("--client-output-buffer-limit", "pubsub 0 0 0") as redis:
        payloads = [_payload(per_message, n) for n in range(messages)]
        size = sum(map(len, payloads)) // len(payloads)
        old = await _best(_old, redis, payloads, rounds)
        new = await _best(_new, redis, payloads, rounds)
        decode = _decode_only(payloads, rounds)
        print(f"{messages} channel messages of {per_message} relayed messages "
              f"(~{size} bytes), read and decoded:")
        print(f"  redis-py get_message + queue hop: {old:7.1f} us/channel message, "
              f"{old / per_message:5.2f} us/relayed message")
        print(f"  redis_channel (resp_reader):      {new:7.1f} us/channel message, "
              f"{new / per_message:5.2f} us/relayed message ({old / new:.1f}x)")
        print(f"  of which decode_batch alone:      {decode:7.1f} us/channel message "
              f"(reading: {old - decode:.1f} -> {new - decode:.1f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--per-message", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.messages, args.per_message, args.rounds))


if __name__ == "__main__":
    main()
