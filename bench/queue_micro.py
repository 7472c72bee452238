"""Micro-benchmark: node CPU per round trip of the cluster's Redis command queue.

``python -m bench.queue_micro [--trips N] [--items K] [--rounds R]`` starts a throwaway
redis-server on 127.0.0.1 (a free port, no persistence) and a ``CommandQueue`` on it, then
runs N round trips one after the other, each of K items shaped like a cluster send batch
(one transaction of an XADD, an HSET and a PEXPIRE per item, a script call, a PUBLISH),
awaiting the batch's result future as a sender does. Prints CPU us per round trip and per
item (``time.process_time``: this process only, not redis-server), best of R rounds: the
queue's fixed cost per round trip is what small batches (a sharded cluster) pay most.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, List, Tuple

from bench.redis_server import redis_server
from maim_message.backends.redis_pipeline import CommandQueue, Script


def _batch(items: int, trip: int) -> List[Tuple[Any, ...]]:
    payload = b"x" * 300
    cmds: List[Tuple[Any, ...]] = []
    for n in range(items):
        cmds.append(("XADD", b"s:%d" % n, b"MAXLEN", b"~", 1000, b"*", b"m", payload))
    cmds.append(("HSET", b"d", *[b"t%d.%d" % (trip, n) for n in range(2 * items)]))
    cmds.append(("PEXPIRE", b"d", 60000))
    return [("MULTI", *cmds), ("EVALSHA", "touch", 1, b"k", trip),
            ("PUBLISH", b"c", payload * items)]


async def _measure(queue: CommandQueue, trips: int, items: int) -> float:
    started = time.process_time()
    for trip in range(trips):
        first, *rest = _batch(items, trip)
        fut = queue.push(first, want_result=True)
        for item in rest:
            queue.push(item)
        assert fut is not None
        await fut
        done = queue.written()
        if done is not None:
            await done
    return (time.process_time() - started) / trips


async def _main(trips: int, items: int, rounds: int) -> None:
    async with redis_server() as redis:
        queue = CommandQueue(redis, {"touch": Script("return redis.call('SET', KEYS[1], "
                                                     "ARGV[1])")})
        await queue.load_scripts()
        queue.start()
        await _measure(queue, max(1, trips // 10), items)  # warm-up
        best = min([await _measure(queue, trips, items) for _ in range(rounds)])
        print(f"{items} item(s) per round trip: {best * 1e6:7.1f} us/round trip, "
              f"{best * 1e6 / items:6.2f} us/item ({queue.batches} batches)")
        await queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--items", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.trips, args.items, args.rounds))


if __name__ == "__main__":
    main()
