"""Load generator: one scenario run per process, result as one JSON line on stdout.

    python -m bench.loadgen --port P --pid SERVER_PID --scenario inbound --params '{...}'

Drives any target the same way, over raw WebSocket connections (``bench.wsclient``).
Work per message is done before the clock starts; while it runs, the client writes
pre-joined batches and counts server frames from their headers. For each measured window
it reports its own CPU use and the server's (from /proc), so a reader can check that the
load generator was never the saturated side.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import sys
import time
from typing import Callable, Dict, List, Optional

try:
    from .wsclient import TOTALS, WSClient, batches, build_frames, connect, envelope, frame
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.wsclient import (  # type: ignore[no-redef]
        TOTALS,
        WSClient,
        batches,
        build_frames,
        connect,
        envelope,
        frame,
    )

HOST = "127.0.0.1"
PATH = "/ws"
TICK = os.sysconf("SC_CLK_TCK")


class Failed(Exception):
    pass


# -- measurement helpers --------------------------------------------------------------------
def proc_status(pid: int) -> Dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])  # KiB
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds of every thread of ``pid``: nanoseconds from schedstat where the kernel
    has it (short windows need better than /proc/<pid>/stat's 10 ms ticks)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Clock:
    """Wall time plus CPU seconds of this process and of the server over one window."""

    def __init__(self, pid: int):
        self.pid = pid

    def start(self) -> None:
        self.s_cpu, self.l_cpu = proc_cpu(self.pid), time.process_time()
        self.t0 = time.perf_counter()

    def stop(self, t1: Optional[float] = None) -> Dict[str, float]:
        t1 = time.perf_counter() if t1 is None else t1
        wall = max(t1 - self.t0, 1e-9)
        self.wall = wall
        return {
            "wall_s": round(wall, 4),
            "server_cpu_s": round(proc_cpu(self.pid) - self.s_cpu, 6),
            "server_cpu_pct": round(100 * (proc_cpu(self.pid) - self.s_cpu) / wall, 1),
            "loadgen_cpu_pct": round(100 * (time.process_time() - self.l_cpu) / wall, 1),
        }


class Waiter:
    """Resolves (with the perf_counter time) when ``cond()`` holds after a client read."""

    def __init__(self, clients: List[WSClient], cond: Callable[[], bool], step=None):
        self.fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.cond, self.step = cond, step
        for c in clients:
            c.on_progress = self._progress

    def _progress(self, c: WSClient) -> None:
        if self.fut.done():
            return
        if c.closed:
            self.fut.set_exception(Failed(c.closed))
            return
        if self.step is not None:
            self.step(c)
        if self.cond():
            self.fut.set_result(time.perf_counter())

    async def wait(self, timeout: float, what: str) -> float:
        if self.cond() and not self.fut.done():
            self.fut.set_result(time.perf_counter())
        try:
            return await asyncio.wait_for(self.fut, timeout)
        except asyncio.TimeoutError:
            raise Failed(f"timeout after {timeout:.0f}s waiting for {what}") from None


async def open_clients(port: int, tag: str, n: int, conc: int = 100,
                       timeout: float = 60, socketio: bool = False) -> List[WSClient]:
    """``n`` upgraded connections, at most ``conc`` handshakes in flight."""
    out: List[Optional[WSClient]] = [None] * n
    nxt = [0]

    async def worker() -> None:
        while nxt[0] < n:
            i = nxt[0]
            nxt[0] += 1
            out[i] = await connect(HOST, port, PATH, f"bench-{tag}-{i}", f"bench_{tag}_{i}",
                                   socketio)

    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(min(conc, n)))), timeout)
    except asyncio.TimeoutError:
        raise Failed(f"timeout after {timeout:.0f}s opening {n} connections") from None
    return [c for c in out if c is not None]


async def warm_up(clients: List[WSClient], tag: str, reply: bool, timeout: float = 30) -> None:
    """One frame per client, wait for its ack (and reply): the connection is usable."""
    a0 = [c.acks for c in clients]
    m0 = [c.msgs for c in clients]
    for c in clients:
        c.send(build_frames(c.api_key, f"{tag}w", 1, socketio=c.socketio)[0])

    def done() -> bool:
        return all(
            c.acks > a and (not reply or c.msgs > m) for c, a, m in zip(clients, a0, m0)
        )

    await Waiter(clients, done).wait(timeout, "warm-up acks")


async def close_all(clients: List[WSClient], graceful: bool = True) -> None:
    if graceful:
        for c in clients:
            if c.closed is None and c.transport is not None:
                c.send(frame(b"\x03\xe8", opcode=8))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(c.closed is None for c in clients):
            await asyncio.sleep(0.02)
    for c in clients:
        c.abort()


# -- scenarios -----------------------------------------------------------------------------
async def inbound(port, pid, tag, clients=1, per_client=50000, window=2048, batch=128,
                  timeout=120, ack_messages=False, socketio=False):
    cs = await open_clients(port, tag, clients, socketio=socketio)
    await warm_up(cs, tag, reply=False)
    plans = []
    for c in cs:  # built and masked before the clock starts
        c.ack_messages = ack_messages
        plans.append(batches(build_frames(c.api_key, tag, per_client, socketio=socketio), batch))
    base = [c.acks for c in cs]
    base_all = TOTALS[0]
    sent = [0] * len(cs)
    nxt = [0] * len(cs)
    index = {id(c): i for i, c in enumerate(cs)}
    total = clients * per_client

    def pump(c: WSClient) -> None:
        i = index[id(c)]
        plan = plans[i]
        while nxt[i] < len(plan) and sent[i] - (c.acks - base[i]) < window:
            c.send(plan[nxt[i]])
            sent[i] += min(batch, per_client - nxt[i] * batch)
            nxt[i] += 1

    waiter = Waiter(cs, lambda: TOTALS[0] - base_all >= total, step=pump)
    clock = Clock(pid)
    clock.start()
    for c in cs:
        pump(c)
    t1 = await waiter.wait(timeout, f"{total} acks")
    cpu = clock.stop(t1)
    await close_all(cs)
    return {"msgs_per_s": total / clock.wall, "units": total, **cpu}


async def rtt_latency(port, pid, tag, count=2000, warm=100, timeout=120, ack_messages=False):
    (c,) = await open_clients(port, tag, 1)
    c.ack_messages = ack_messages
    await warm_up([c], tag, reply=True)
    frames = build_frames(c.api_key, tag, warm + count)
    base = c.msgs
    sent_at: List[float] = []
    done_at: List[float] = []

    def step(cl: WSClient) -> None:
        got = cl.msgs - base
        while len(done_at) < got:
            done_at.append(time.perf_counter())
        if got == len(sent_at) and got < len(frames):
            sent_at.append(time.perf_counter())
            cl.send(frames[got])

    waiter = Waiter([c], lambda: c.msgs - base >= len(frames), step=step)
    clock = Clock(pid)
    clock.start()
    sent_at.append(time.perf_counter())
    c.send(frames[0])
    t1 = await waiter.wait(timeout, f"{len(frames)} replies")
    cpu = clock.stop(t1)
    await close_all([c])
    rtts = sorted((d - s) * 1000 for s, d in zip(sent_at[warm:], done_at[warm:]))
    pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))]  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "samples": len(rtts),
            "units": len(frames), **cpu}


async def rtt_throughput(port, pid, tag, count=20000, inflight=32, timeout=120,
                         ack_messages=False):
    (c,) = await open_clients(port, tag, 1)
    c.ack_messages = ack_messages
    await warm_up([c], tag, reply=True)
    frames = build_frames(c.api_key, tag, count)
    base = c.msgs
    nxt = [0]

    def step(cl: WSClient) -> None:
        target = min(count, cl.msgs - base + inflight)
        if target > nxt[0]:
            cl.send(b"".join(frames[nxt[0] : target]))
            nxt[0] = target

    waiter = Waiter([c], lambda: c.msgs - base >= count, step=step)
    clock = Clock(pid)
    clock.start()
    step(c)
    t1 = await waiter.wait(timeout, f"{count} replies")
    cpu = clock.stop(t1)
    await close_all([c])
    return {"msgs_per_s": count / clock.wall, "units": count, **cpu}


async def broadcast(port, pid, tag, clients=100, count=1000, timeout=120):
    cs = await open_clients(port, tag, clients)
    await warm_up(cs, tag, reply=False)
    base = TOTALS[1]
    total = clients * count
    ctl = envelope(cs[0].api_key, f"custom_{tag}_bcast", {}, msg_type="custom_bench_broadcast")
    ctl["payload"] = {"count": count}
    trigger = frame(json.dumps(ctl).encode())
    waiter = Waiter(cs, lambda: TOTALS[1] - base >= total)
    clock = Clock(pid)
    clock.start()
    cs[0].send(trigger)
    t1 = await waiter.wait(timeout, f"{total} deliveries")
    cpu = clock.stop(t1)
    await close_all(cs)
    return {"deliveries_per_s": total / clock.wall, "units": total, **cpu}


async def settle_rss(pid: int, limit: float = 10.0) -> int:
    last = proc_status(pid)["VmRSS"]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = proc_status(pid)["VmRSS"]
        if abs(now - last) <= max(64, last // 500):
            return now
        last = now
    return last


async def idle(port, pid, tag, count=1000, conc=100, timeout=300):
    warm = await open_clients(port, f"{tag}x", 20)
    await warm_up(warm, f"{tag}x", reply=False)
    await close_all(warm)
    rss0 = await settle_rss(pid)
    clock = Clock(pid)
    clock.start()
    cs = await open_clients(port, tag, count, conc, timeout)
    cpu = clock.stop()
    rss1 = await settle_rss(pid)
    dead = [c.closed for c in cs if c.closed]
    if dead:
        raise Failed(f"{len(dead)} of {count} connections closed: {dead[0]}")
    await warm_up(cs[-1:], tag, reply=False)  # the hub still answers with all of them open
    await close_all(cs, graceful=False)
    return {
        "handshakes_per_s": count / clock.wall,
        "kib_per_conn": (rss1 - rss0) / count,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "units": count,
        **cpu,
    }


async def media(port, pid, tag, size=5 * 2**20, timeout=120):
    (c,) = await open_clients(port, tag, 1)
    await warm_up([c], tag, reply=True)
    data = base64.b64encode(os.urandom(size * 3 // 4 + 3)).decode()[:size]
    env = envelope(c.api_key, f"msg_{tag}_media", {"type": "image", "data": data})
    big = frame(json.dumps(env).encode())
    c.keep_messages = True
    base = c.msgs
    rss0 = proc_status(pid)["VmRSS"]
    waiter = Waiter([c], lambda: c.msgs - base >= 1)
    clock = Clock(pid)
    clock.start()
    c.send(big)
    t1 = await waiter.wait(timeout, "the media reply")
    cpu = clock.stop(t1)
    hwm = proc_status(pid)["VmHWM"]
    reply = json.loads(c.kept[-1])
    seg = reply.get("payload", {}).get("message_segment", {})
    intact = seg.get("type") == "image" and seg.get("data") == data
    await close_all([c])
    return {
        "seconds": clock.wall,
        "peak_delta_kib": hwm - rss0,
        "peak_over_payload": (hwm - rss0) * 1024 / size,
        "intact": intact,
        "frame_bytes": len(big),
        "units": 1,
        **cpu,
    }


SCENARIOS = {
    "inbound": inbound,
    "rtt_latency": rtt_latency,
    "rtt_throughput": rtt_throughput,
    "broadcast": broadcast,
    "idle": idle,
    "media": media,
}


async def run(args) -> dict:
    params = json.loads(args.params)
    tag = os.urandom(4).hex()
    try:
        metrics = await SCENARIOS[args.scenario](args.port, args.pid, tag, **params)
        return {"ok": True, "metrics": metrics}
    except Failed as e:
        return {"ok": False, "error": str(e)}
    except (OSError, ConnectionError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="server pid (RSS and CPU)")
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    ap.add_argument("--params", default="{}")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:  # cheaper per-read dispatch: keeps the load generator far from saturation
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip teardown of thousands of aborted transports


if __name__ == "__main__":
    main()
