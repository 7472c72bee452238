"""Micro-benchmark: node CPU per Redis reply, redis-py's reader against ``resp_reader``.

``python -m bench.redis_reply_micro [--replies N] [--rounds R]`` starts a throwaway
redis-server on 127.0.0.1 (a free port, no persistence), writes batches of N pipelined
PINGs (``+PONG`` replies) and transactions of N INCRs (``+QUEUED`` replies and one EXEC
array), and reads the replies two ways on the same connection: one
``conn.read_response()`` per reply (the cluster queue's old read path) and
``RespReader`` over the connection's stream (the new one). Prints CPU us per reply
(``time.process_time``: this process only, not redis-server), best of R rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, Awaitable, Callable, List

from bench.redis_server import redis_server
from maim_message.backends.redis_pipeline import pack
from maim_message.backends.resp_reader import RespReader


async def _old(conn: Any, data: bytes, count: int) -> None:
    await conn.send_packed_command([data], check_health=False)
    for _ in range(count):
        try:
            await conn.read_response()
        except Exception:  # error replies are replies here
            pass


async def _new(conn: Any, data: bytes, count: int) -> None:
    reader, writer = conn._reader, conn._writer
    writer.write(data)
    await writer.drain()
    parser = RespReader()
    got = parser.take(count)
    while len(got) < count:
        parser.feed(await reader.read(1 << 18))
        got += parser.take(count - len(got))


async def _measure(run: Callable[[Any, bytes, int], Awaitable[None]], conn: Any,
                   data: bytes, count: int, rounds: int, batches: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(batches):
            await run(conn, data, count)
        best = min(best, (time.process_time() - started) / (batches * count))
    return best * 1e6


async def _main(replies: int, rounds: int) -> None:
    async with redis_server() as redis:
        conn = redis.connection_pool.make_connection()
        await conn.connect()
        pings = b"".join(pack(("PING",)) for _ in range(replies))
        tx = (pack(("MULTI",)) + b"".join(pack(("INCR", "k")) for _ in range(replies))
              + pack(("EXEC",)))
        batches = max(1, 200_000 // replies)
        rows: List[str] = []
        for name, data, count in (("PONG", pings, replies), ("QUEUED+EXEC", tx, replies + 2)):
            old = await _measure(_old, conn, data, count, rounds, batches)
            new = await _measure(_new, conn, data, count, rounds, batches)
            rows.append(f"{name:12} batch of {count:5}: redis-py read_response "
                        f"{old:6.2f} us/reply, resp_reader {new:5.2f} us/reply "
                        f"({old / new:.1f}x)")
        print("\n".join(rows))
        await conn.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.replies, args.rounds))


if __name__ == "__main__":
    main()
