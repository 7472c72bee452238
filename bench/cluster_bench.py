"""Cluster benchmark: 1 node alone, 1 node + Redis, 2 nodes + Redis, 2 nodes + 2 Redis.

    python -m bench cluster            # writes docs/cluster-benchmark.md (~1-2 min)
    python -m bench cluster --smoke    # small counts, prints only (CI: never asserts speed)

Nodes run as ``maim_message serve`` runs a hub: ``ack="handled"`` (a frame is acked once
its forward is stored) and the hub's collector settings (``hub/gc_tuning.py``;
``MAIM_BENCH_GC=default`` keeps CPython's, to measure what they change).

Diagnostics: ``MAIM_BENCH_CMDSTATS=1`` logs Redis's per-command statistics per
configuration; ``MAIM_BENCH_PROFILE=<dir>`` makes every node dump a cProfile of each
measured row there (``<node>-<n>.prof``: the row's measured phase is the dump after its
"measuring" line).

The last line printed is one JSON object with the headline figures
(``node_cpu_us_per_msg_single`` / ``_cluster``, ``redis_cmds_per_msg``,
``redis_cpu_us_per_msg``, ``lost``, ``duplicates``) and every row.

Workload ("relay"): P sender clients each send messages addressed to a receiver user; the
hub forwards every message (``on_message`` -> ``send_message``, the hub's routing) and the
receiver acks each one, as 0.6.8 and our clients do, so the outbox (the Redis stream in
cluster mode) is written and trimmed per message. In the 2-node run every sender is on the
other node than its receiver: every message crosses Redis. Each sender keeps a window of
unacknowledged-by-delivery messages in flight. The load generator is this process (raw
frames built before the clock, replies counted by header: ``bench/wsclient.py``).

Also measured: Redis commands per message (what the nodes send, and what Redis executes
including the commands inside scripts, from INFO commandstats), Redis CPU per message,
and the memory one idle connection costs a node and Redis (presence entries).

Every process is started here and killed by PID; readiness is a printed READY line or a
PING answer; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.loadgen import proc_cpu as cpu_seconds  # noqa: E402  (ns: schedstat)
from bench.wsclient import WSClient, build_frames, connect  # noqa: E402

OUT = ROOT / "docs" / "cluster-benchmark.md"
TAGS: List[str] = []


# -- a hub node (this file run with --node) -------------------------------------------------


async def node_main(port: int, backend: str, url: str, node_id: str) -> None:
    from maim_message.server import WebSocketServer, create_server_config

    server: WebSocketServer

    async def forward(message: Any, meta: Dict[str, Any]) -> None:
        await server.send_message(message)

    extra: Dict[str, Any] = {}
    if backend == "redis":
        extra = {"cluster_backend": "redis", "cluster_redis_url": url,
                 "cluster_node_id": node_id}
    server = WebSocketServer(create_server_config(
        host="127.0.0.1", port=port, on_auth_extract_user=lambda m: m["api_key"],
        on_message=forward, enable_connection_log=False, enable_message_log=False,
        rate_limit_per_second=None, max_connections_per_key=None,
        ack="handled", **extra))  # as the hub relays: acked once the forward is stored
    if os.environ.get("MAIM_BENCH_GC") != "default":  # as `maim_message serve` runs
        from maim_message.hub.gc_tuning import tune_for_serving

        tune_for_serving()
    await server.start()
    profile_dir = os.environ.get("MAIM_BENCH_PROFILE")  # a cProfile dump per "stats"
    profiler = None
    dumps = 0
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line:
            break
        if line == "stats":
            cluster = server.cluster
            stats = cluster.stats() if backend == "redis" else {}  # type: ignore[union-attr]
            stats["connections"] = server.get_connection_count()
            if profiler is not None:  # what ran since the previous "stats"
                dumps += 1
                profiler.dump_stats(f"{profile_dir}/{node_id}-{dumps}.prof")  # stops it
                profiler.clear()
                profiler.enable()
            print("STATS " + json.dumps(stats), flush=True)
    await server.stop()


# -- process helpers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reply_parser() -> str:
    """Which RESP reader the nodes use (they run this tree's src with this environment)."""
    from maim_message.backends import resp_codec

    if not resp_codec.NATIVE:
        return "the pure-Python reader"
    import hiredis

    return f"hiredis {hiredis.__version__}"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc, self.name = proc, name

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, prefix: str, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not raw:
                raise RuntimeError(f"{self.name} exited")
            text = raw.decode()
            if text.startswith(prefix):
                return text[len(prefix):].strip()

    async def ask(self, cmd: str, prefix: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line(prefix)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)


async def start_node(port: int, backend: str, url: str, node_id: str) -> Proc:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--node", str(port), backend, url,
        node_id, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
    node = Proc(proc, node_id)
    await node.line("READY")
    return node


class Redis:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.version = ""

    async def ready(self) -> None:
        import redis.asyncio as aredis

        self.client = aredis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                await self.client.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
        self.version = (await self.client.info("server"))["redis_version"]

    async def executed(self) -> int:
        """Commands Redis executed since the last reset, including those inside scripts
        (the nodes count what they sent themselves: ``stats``)."""
        stats = await self.client.info("commandstats")
        return sum(int(row["calls"]) for name, row in stats.items()
                   if name not in ("cmdstat_info", "cmdstat_config|resetstat"))

    async def memory(self) -> int:
        return int((await self.client.info("memory"))["used_memory"])

    async def flush(self) -> None:
        await self.client.flushall()
        await self.client.config_resetstat()

    async def stop(self) -> None:
        await self.client.aclose()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


# -- the relay workload ---------------------------------------------------------------------


async def relay(ports_tx: List[int], ports_rx: List[int], pairs: int, count: int,
                window: int, tag: str, timeout: float = 300) -> Dict[str, float]:
    """``pairs`` sender/receiver clients; sender i on ports_tx[i % n], receiver on ports_rx."""
    senders: List[WSClient] = []
    receivers: List[WSClient] = []
    for i in range(pairs):
        receivers.append(await connect("127.0.0.1", ports_rx[i % len(ports_rx)], "/ws",
                                       f"{tag}rx{i}", f"{tag}rx{i}"))
        senders.append(await connect("127.0.0.1", ports_tx[i % len(ports_tx)], "/ws",
                                     f"{tag}tx{i}", f"{tag}tx{i}"))
    for r in receivers:
        r.ack_messages = True
        r.acked_ids = []
    frames = [build_frames(f"{tag}rx{i}", f"{tag}{i}", count) for i in range(pairs)]
    sent = [0] * pairs
    done = asyncio.get_running_loop().create_future()
    total = pairs * count

    def pump(i: int) -> None:
        r, s = receivers[i], senders[i]
        limit = min(count, r.msgs + window)
        if sent[i] < limit:
            s.send(b"".join(frames[i][sent[i]:limit]))
            sent[i] = limit

    def progress(i: int) -> Any:
        def on(_c: WSClient) -> None:
            pump(i)
            if sum(r.msgs for r in receivers) >= total and not done.done():
                done.set_result(None)
        return on

    for i, r in enumerate(receivers):
        r.on_progress = progress(i)
    t0 = time.perf_counter()
    for i in range(pairs):
        pump(i)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        elapsed = time.perf_counter() - t0
        got = sum(r.msgs for r in receivers)
        ids = [m for r in receivers for m in (r.acked_ids or ())]
        for c in senders + receivers:
            c.abort()
    unique = len(set(ids))
    return {"messages": got, "seconds": elapsed, "rate": got / elapsed,
            "lost": total - unique, "duplicates": len(ids) - unique}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run_config(name: str, nodes: List[Proc], ports: List[int], cross: bool,
                     redises: List[Redis], pairs: int, count: int, window: int,
                     warm: int) -> Dict[str, Any]:
    tx = ports
    rx = list(reversed(ports)) if cross else ports
    log(f"{name}: warm-up")
    tag = f"c{len(TAGS)}"  # unique user names and msg ids per configuration
    TAGS.append(tag)
    await relay(tx, rx, pairs, warm, window, f"w{tag}")
    if redises:
        for redis in redises:
            await redis.client.config_resetstat()
        before_cmds = [json.loads(await n.ask("stats", "STATS"))["redis_commands"]
                       for n in nodes]
        redis_cpu0 = [cpu_seconds(r.proc.pid) for r in redises]
    if not redises and os.environ.get("MAIM_BENCH_PROFILE"):
        for n in nodes:  # start the node's profile of this row
            await n.ask("stats", "STATS")
    log(f"{name}: measuring")
    cpu0 = [cpu_seconds(n.pid) for n in nodes]
    own0 = time.process_time()
    result = await relay(tx, rx, pairs, count, window, f"m{tag}")
    own = time.process_time() - own0
    cpu = [cpu_seconds(n.pid) - c for n, c in zip(nodes, cpu0)]
    msgs = result["messages"]
    row: Dict[str, Any] = {
        "config": name, "nodes": len(nodes), "messages": msgs,
        "seconds": round(result["seconds"], 2), "rate": round(result["rate"]),
        "per_node": round(result["rate"] / len(nodes)),
        "node_cpu": [round(c, 2) for c in cpu], "loadgen_cpu": round(own, 2),
        "node_cpu_us_per_msg": round(sum(cpu) / msgs * 1e6, 1),
        "lost": result["lost"], "duplicates": result["duplicates"],
    }
    if not redises and os.environ.get("MAIM_BENCH_PROFILE"):
        for n in nodes:  # dump the node's profile of this row
            await n.ask("stats", "STATS")
    if redises:
        executed = sum([await r.executed() for r in redises])
        if os.environ.get("MAIM_BENCH_CMDSTATS"):
            for r in redises:
                stats = await r.client.info("commandstats")
                log(f"{name}: " + ", ".join(f"{k[8:]} {v['calls']}x{v['usec_per_call']:.1f}us"
                                             for k, v in stats.items()))
        after_cmds = [json.loads(await n.ask("stats", "STATS"))["redis_commands"]
                      for n in nodes]
        sent_cmds = sum(a - b for a, b in zip(after_cmds, before_cmds))
        redis_cpu = sum(cpu_seconds(r.proc.pid) - c for r, c in zip(redises, redis_cpu0))
        row.update({
            "redis_cmds_per_msg": round(sent_cmds / msgs, 2),
            "redis_executed_per_msg": round(executed / msgs, 2),
            "redis_cpu": round(redis_cpu, 2),
            "redis_cpu_us_per_msg": round(redis_cpu / msgs * 1e6, 1),
            "redis_servers": len(redises),
        })
    return row


async def idle_cost(port: int, node: Proc, redis: Redis, n: int) -> Dict[str, float]:
    """Memory per idle connection on a cluster node and in Redis (presence)."""
    await asyncio.sleep(0)
    rss0, mem0 = rss_kib(node.pid), await redis.memory()
    t0 = time.perf_counter()
    clients: List[WSClient] = []
    sem = asyncio.Semaphore(100)

    async def one(i: int) -> None:
        async with sem:
            clients.append(await connect("127.0.0.1", port, "/ws", f"idle{i}", f"idle{i}"))

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 120)
    elapsed = time.perf_counter() - t0
    deadline = time.monotonic() + 30
    while json.loads(await node.ask("stats", "STATS"))["queue_depth"] > 0:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    rss1, mem1 = rss_kib(node.pid), await redis.memory()
    for c in clients:
        c.abort()
    return {"connections": n, "connect_per_s": round(n / elapsed),
            "node_kib_per_conn": round((rss1 - rss0) / n, 1),
            "redis_bytes_per_conn": round((mem1 - mem0) / n)}


# -- report -----------------------------------------------------------------------------------


def _commit() -> str:
    """ ", on <commit>" of the checkout measured (nothing outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=ROOT, capture_output=True, text=True, timeout=5).stdout
    return f", on {out.stdout.strip()}" + (" with local changes" if dirty.strip() else "")


def render(rows: List[Dict[str, Any]], idle: Dict[str, float], args: argparse.Namespace,
           redis_version: str) -> str:
    import redis as redis_py

    lines = [
        "## Cluster mode (`python -m bench cluster`, bench/cluster_bench.py)",
        "",
        f"Relay workload: {args.pairs} sender -> receiver client pairs, {args.count} "
        f"messages each ({args.pairs * args.count} measured, after {args.warm} per pair "
        f"warm-up), window {args.window} in flight per pair; the hub forwards every message "
        "(`on_message` -> `send_message`) and the receiver acks it (outbox written and "
        "trimmed per message). Nodes run as `maim_message serve` runs a hub: "
        "`ack=\"handled\"` and the hub's collector settings (`hub/gc_tuning.py`"
        + (", here switched off by MAIM_BENCH_GC=default" if os.environ.get("MAIM_BENCH_GC")
           == "default" else "") + "), frame claims off (the default). One run, all "
        f"configurations in the same run{_commit()}"
        + (f", in {args.rounds} rounds: every configuration is measured once per round, "
           "in turn (the host's speed drifts), and each row is the configuration's median "
           "round by node CPU per message (every round's figure in brackets); lost and "
           "duplicates are summed over the rounds." if args.rounds > 1 else "."),
        "",
        "| configuration | delivered msgs/s | per node | node CPU (s) | node CPU us/msg | "
        "load gen CPU (s) | Redis CPU (s) | Redis cmds/msg executed (sent by nodes) | "
        "Redis CPU us/msg | lost / duplicates |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        redis_cells = (f"{r['redis_cpu']} | {r['redis_executed_per_msg']} "
                       f"({r['redis_cmds_per_msg']}) | {r['redis_cpu_us_per_msg']}"
                       if "redis_cpu" in r else "- | - | -")
        lines.append(
            f"| {r['config']} | {r['rate']:,} | {r['per_node']:,} | "
            f"{' + '.join(str(c) for c in r['node_cpu'])} | {r['node_cpu_us_per_msg']}"
            + (f" ({', '.join(str(c) for c in r['node_cpu_rounds'])})"
               if len(r.get("node_cpu_rounds", ())) > 1 else "") + " | "
            f"{r['loadgen_cpu']} | {redis_cells} | {r['lost']} / {r['duplicates']} |")
    lines += [
        "",
        f"Idle connections on one cluster node: {idle['connections']:,} opened at "
        f"{idle['connect_per_s']:,}/s; {idle['node_kib_per_conn']} KiB RSS per connection "
        f"on the node, {idle['redis_bytes_per_conn']} bytes of Redis memory per connection "
        "(presence: the node's connection hash and the pair's location hash).",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, redis-server {redis_version}, redis-py "
        f"{redis_py.__version__}, replies parsed by {reply_parser()}. Every process (load "
        "generator, nodes, Redis) shares the same cores, so the 2-node row measures "
        "coordination cost, not scale-out: a second node adds a process but no core.",
        "",
    ]
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> None:
    redises = [Redis(), Redis()]
    procs: List[Proc] = []
    rows: List[Dict[str, Any]] = []
    cfg = (args.pairs, args.count, args.window, args.warm)

    async def nodes(n: int, url: str, prefix: str) -> List[int]:
        nonlocal procs
        ports = [free_port() for _ in range(n)]
        procs = [await start_node(p, "redis", url, f"{prefix}{i}") for i, p in enumerate(ports)]
        return ports

    async def stop_nodes() -> None:
        for p in procs:
            await p.kill()
        procs.clear()
        for r in redises:
            await r.flush()

    idle: Dict[str, float] = {}
    rounds: List[List[Dict[str, Any]]] = []
    try:
        for r in redises:
            await r.ready()
        for n in range(args.rounds):  # every configuration once per round, in turn
            if args.rounds > 1:
                log(f"round {n + 1} of {args.rounds}")
            rows = []
            ports = [free_port()]
            procs = [await start_node(ports[0], "local", "", "local")]
            rows.append(await run_config("1 node (local)", procs, ports, False, [], *cfg))
            await stop_nodes()
            one = redises[:1]
            ports = await nodes(1, one[0].url, "solo")
            rows.append(await run_config("1 node + Redis", procs, ports, False, one, *cfg))
            await stop_nodes()
            ports = await nodes(2, one[0].url, "n")
            rows.append(await run_config("2 nodes + Redis, all cross-node", procs, ports,
                                         True, one, *cfg))
            rows.append(await run_config("2 nodes + Redis, same-node pairs", procs, ports,
                                         False, one, *cfg))
            await stop_nodes()
            ports = await nodes(2, ",".join(r.url for r in redises), "s")
            rows.append(await run_config("2 nodes + 2 Redis (sharded), all cross-node",
                                         procs, ports, True, redises, *cfg))
            await stop_nodes()
            rounds.append(rows)
        ports = await nodes(1, redises[0].url, "idle")  # (after: its connections' churn
        log("idle connections on a fresh cluster node")  # must not touch a measured row)
        idle = await idle_cost(ports[0], procs[0], redises[0], args.idle)
    finally:
        for p in procs:
            await p.kill()
        for r in redises:
            await r.stop()
    rows = median_rows(rounds)
    text = render(rows, idle, args, redises[0].version)
    print(text)
    print(json.dumps(rows, indent=1), file=sys.stderr)
    if not args.quick:
        OUT.write_text(text)
        print(f"wrote {OUT}", file=sys.stderr)
    print(json.dumps(headline(rows)))


def median_rows(rounds: List[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Per configuration, the round whose node CPU per message is the median (the host's
    speed drifts: rounds interleave the configurations), with every round's figure
    (``node_cpu_rounds``) and lost / duplicates summed over all rounds."""
    rows = []
    for runs in zip(*rounds):
        ranked = sorted(runs, key=lambda r: r["node_cpu_us_per_msg"])
        row = dict(ranked[(len(ranked) - 1) // 2])  # (of an even count: the lower middle)
        row["node_cpu_rounds"] = [r["node_cpu_us_per_msg"] for r in runs]
        row["lost"] = sum(r["lost"] for r in runs)
        row["duplicates"] = sum(r["duplicates"] for r in runs)
        rows.append(row)
    return rows


def headline(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The figures the cluster goals are checked against (one JSON line)."""
    single = rows[0]["node_cpu_us_per_msg"]
    clustered = [r for r in rows if "redis_cpu" in r]
    worst_node = max(r["node_cpu_us_per_msg"] for r in clustered)
    return {
        "node_cpu_us_per_msg_single": single,
        "node_cpu_us_per_msg_cluster": worst_node,
        "node_cpu_ratio": round(worst_node / single, 2),
        "redis_cmds_per_msg": max(r["redis_executed_per_msg"] for r in clustered),
        "redis_cmds_per_msg_sent": max(r["redis_cmds_per_msg"] for r in clustered),
        "redis_cpu_us_per_msg": max(r["redis_cpu_us_per_msg"] for r in clustered),
        "lost": sum(r["lost"] for r in rows),
        "duplicates": sum(r["duplicates"] for r in rows),
        "rows": {r["config"]: {k: r[k] for k in ("node_cpu_us_per_msg", "node_cpu_rounds",
                                                 "rate", "lost",
                                                 "duplicates", "redis_executed_per_msg",
                                                 "redis_cpu_us_per_msg") if k in r}
                 for r in rows},
    }


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--node":
        port, backend, url, node_id = argv[1], argv[2], argv[3], argv[4]
        asyncio.run(node_main(int(port), backend, url, node_id))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="every configuration measured this many times, interleaved; "
                             "each row is its median round")
    parser.add_argument("--quick", "--smoke", action="store_true",
                        help="small counts, prints only (CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.count, args.warm, args.idle, args.rounds = 4, 200, 20, 200, 1
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
