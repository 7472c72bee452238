"""Turn the runner's results into ``docs/benchmarks.md`` (and a rich summary table)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .scenarios import BY_ID, Goal, Metric, Scenario

ROOT = Path(__file__).resolve().parent.parent
COLS = ("picows", "bare", "0.6.8", "ours")
SIO_COLS = ("0.7.5", "ours-0.6", "ours")  # S7: 0.7 clients; ours-0.6 = ours on the 0.6 wire


def _run(args: List[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=str(ROOT))
        return out.stdout.strip()
    except Exception:
        return ""


def _versions(python: str, names: List[str]) -> str:
    code = (
        "import importlib.metadata as m\n"
        f"for n in {names!r}:\n"
        "    try: print(n + ' ' + m.version(n))\n"
        "    except Exception: pass\n"
    )
    return ", ".join(_run([python, "-c", code]).splitlines())


def machine_facts(targets: Dict[str, Dict]) -> Dict[str, str]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
        mem_gib = int(mem.split()[1]) / 2**20
    except (OSError, StopIteration):
        mem_gib = 0.0
    commit = _run(["git", "rev-parse", "--short", "HEAD"]) or "?"
    if _run(["git", "status", "--porcelain", "--", "src", "bench"]):
        commit += " + uncommitted changes"
    facts = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "memory": f"{mem_gib:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "load average at end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python (bench, picows, bare, ours)": platform.python_version(),
        "bench env": _versions(sys.executable, ["websockets", "picows", "orjson", "uvloop",
                                                 "rich"]),
        "ours": f"maim_message {targets.get('ours', {}).get('version') or '?'} "
                f"(git {commit})",
    }
    up = targets.get("0.6.8", {}).get("python")
    if up:
        facts["0.6.8 env"] = _versions(
            up, ["maim_message", "uvicorn", "fastapi", "starlette", "websockets"]
        )
    up07 = targets.get("0.7.5", {}).get("python")
    if up07:
        facts["0.7.5 env"] = _versions(
            up07, ["maim_message", "python-socketio", "python-engineio", "aiohttp"]
        )
    return facts


# -- formatting -------------------------------------------------------------------------------
def fmt(v: Optional[float], m: Metric) -> str:
    if v is None:
        return "—"
    if m.digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{m.digits}f}"


def _cell(res: Optional[Dict], m: Metric) -> str:
    if res is None:
        return "—"
    if not res.get("ok"):
        err = str(res.get("error", "?"))
        if "not available in this build" in err:
            return "n/a (not in this build)"
        return "failed: " + (err[:70] + "…" if len(err) > 70 else err)
    text = fmt(res["median"].get(m.key), m)
    if "intact" in res["median"] and m.key == "seconds" and not res["median"]["intact"]:
        text += " (NOT intact)"
    return text


def _value(res: Optional[Dict], key: str) -> Optional[float]:
    if res and res.get("ok"):
        v = res["median"].get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return None


def _ratio(a: Optional[float], b: Optional[float], m: Metric) -> str:
    if a is None or b is None or a == 0 or b == 0:
        return "—"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def verdict(goal: Goal, m: Metric, row: Dict[str, Optional[Dict]]) -> str:
    ours = _value(row.get("ours"), goal.metric)
    if ours is None:
        return "not measured"
    if goal.ref == "abs":
        ref: Optional[float] = 1.0
    else:
        ref = _value(row.get(goal.ref), goal.metric)
    if ref is None:
        return f"no {goal.ref} number"
    need = goal.factor * ref
    res = row["ours"] or {}
    if "intact" in res.get("median", {}) and not res["median"]["intact"]:
        return "MISSED: not delivered intact"
    if m.higher_is_better:
        if ours >= need:
            return f"met ({ours / ref:.2f}x)" if goal.ref != "abs" else "met"
        return f"MISSED: {ours / ref:.2f}x {goal.ref}, needs +{(need / ours - 1) * 100:.0f}%"
    if ours <= need:
        return "met" if goal.ref == "abs" else f"met ({ours / ref:.2f}x)"
    return f"MISSED by {(ours / need - 1) * 100:.0f}% ({fmt(ours, m)} vs {fmt(need, m)} {m.unit})"


def rows(data: Dict) -> List[List[str]]:
    out = []
    for sid in data["scenarios"]:
        sc: Scenario = BY_ID[sid]
        if sc.socketio:
            continue  # their own table (sio_rows)
        row = dict(data["results"].get(sid, {}))
        if sc.same_as:  # S6: compare with the reference scenario's other targets
            ref = data["results"].get(sc.same_as, {})
            for t in COLS:
                if t not in row and t in ref:
                    row[t] = ref[t]
        for m in sc.metrics:
            goals = [g for g in sc.goals if g.metric == m.key]
            o = _value(row.get("ours"), m.key)
            out.append([
                sid, sc.title if m is sc.metrics[0] else "",
                m.label if m.label == m.unit else f"{m.label} ({m.unit})",
                *(_cell(row.get(t), m) for t in COLS),
                _ratio(o, _value(row.get("0.6.8"), m.key), m),
                _ratio(o, _value(row.get("bare"), m.key), m),
                _ratio(o, _value(row.get("picows"), m.key), m),
                "; ".join(g.text for g in goals) or "—",
                "; ".join(verdict(g, m, row) for g in goals) or "—",
            ])
    return out


HEAD = ["id", "scenario", "metric", "picows", "bare", "0.6.8", "ours", "ours/0.6.8",
        "ours/bare", "ours/picows", "goal", "verdict"]
SIO_HEAD = ["id", "scenario", "metric", "0.7.5", "ours (0.6 wire)", "ours (Socket.IO)",
            "ours/0.7.5", "ours/ours-0.6", "goal", "verdict"]


def sio_rows(data: Dict) -> List[List[str]]:
    """S7: the same inbound load from 0.7-style clients; ours on both wires and 0.7.5."""
    out = []
    for sid in data["scenarios"]:
        sc: Scenario = BY_ID[sid]
        if not sc.socketio:
            continue
        row = dict(data["results"].get(sid, {}))
        for m in sc.metrics:
            goals = [g for g in sc.goals if g.metric == m.key]
            o = _value(row.get("ours"), m.key)
            out.append([
                sid, sc.title if m is sc.metrics[0] else "",
                m.label if m.label == m.unit else f"{m.label} ({m.unit})",
                *(_cell(row.get(t), m) for t in SIO_COLS),
                _ratio(o, _value(row.get("0.7.5"), m.key), m),
                _ratio(o, _value(row.get("ours-0.6"), m.key), m),
                "; ".join(g.text for g in goals) or "—",
                "; ".join(verdict(g, m, row) for g in goals) or "—",
            ])
    return out


def _md_table(head: List[str], body: List[List[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    return "\n".join(lines)


def evidence(data: Dict) -> str:
    body = []
    best_ratio = []
    for sid in data["scenarios"]:
        sc = BY_ID[sid]
        res = data["results"].get(sid, {})
        for t in (*COLS, "0.7.5", "ours-0.6", "null"):
            r = res.get(t)
            if not r or not r.get("ok"):
                continue
            med = r["median"]
            m = sc.metrics[0]
            short = med.get("wall_s", 0) < 0.5  # 10 ms CPU ticks: too coarse to say
            cost = "—"
            costs = [  # per run, then the median: CPU time / messages of the same run
                x["metrics"]["server_cpu_s"] / x["metrics"]["units"] * 1e6
                for x in r.get("runs", [])
                if x.get("ok") and x["metrics"].get("units") and "server_cpu_s" in x["metrics"]
            ] or [
                x["metrics"]["server_cpu_pct"] / 100 / x["metrics"][m.key] * 1e6
                for x in r.get("runs", [])
                if x.get("ok") and m.key.endswith("_per_s") and x["metrics"].get(m.key)
                and x["metrics"].get("wall_s", 0) >= 0.5
            ]
            short = short and "server_cpu_s" not in med  # nanosecond CPU clock: never short
            if costs and t != "null":
                cost = f"{statistics.median(costs):,.1f} µs"
            body.append([sid, t, fmt(med.get(m.key), m) + f" {m.unit}",
                         f"{med.get('wall_s', 0):.2f} s",
                         "—" if short else f"{med.get('server_cpu_pct', 0):.0f}%",
                         "—" if short else f"{med.get('loadgen_cpu_pct', 0):.0f}%", cost])
        null = _value(res.get("null"), sc.metrics[0].key)
        reals = [v for v in (_value(res.get(t), sc.metrics[0].key) for t in COLS) if v]
        if null and reals and sc.metrics[0].higher_is_better:
            best_ratio.append(f"{sid} {null / max(reals):.1f}x")
    text = _md_table(
        ["id", "target", "result", "window", "server CPU", "load generator CPU",
         "server CPU per unit"], body
    )
    if best_ratio:
        text += ("\n\nLoad generator ceiling (null server: handshake and frame headers only, "
                 "pre-built replies) over the fastest real target in the same run: "
                 + ", ".join(best_ratio) + ".")
    return text


def render(data: Dict) -> str:
    mf = data.get("machine", {})
    mf = dict(mf, **{"CPU pinning": data.get("pinning", "none")})
    facts = "\n".join(f"- **{k}**: {v}" for k, v in mf.items())
    targets = "\n".join(
        f"- **{n}**: " + (f"failed: {t['error']}" if t.get("error") else (t.get("version") or "ok"))
        for n, t in data["targets"].items()
    )
    if data.get("smoke"):
        mode = "SMOKE (tiny counts, not a measurement)"
    else:
        by_n: Dict[int, List[str]] = {}
        for sid, n in data["runs"].items():
            by_n.setdefault(n, []).append(sid)
        mode = "median of " + ", ".join(
            f"{n} runs ({' '.join(ids)})" for n, ids in sorted(by_n.items(), reverse=True)
        )
    return f"""# Benchmarks

Generated by `{data['command']}` ({mode}, {data['elapsed_s']:.0f} s wall). Regenerate with
`python -m bench` from the repository root (full run, roughly 9-15 minutes on 2 cores;
`python -m bench --smoke` checks the harness in under a minute). See `bench/README.md`;
what the figures mean for the speed goals, what paid and what did not: [speed.md](speed.md).

Targets, all on 127.0.0.1, each a separate process next to one load-generator process:
**picows** = `picows` (frame parsing in C, callback listener) + orjson doing the same minimum
per-frame work as bare, the practical limit for a Python hub on this machine; **bare** =
`websockets` (new asyncio API) + orjson doing only the per-frame work (decode, one
`sys_ack`; the reply for S2/S5; one pre-encoded frame per client for S3), the ceiling a hub
built on that stack can approach; **0.6.8** = the published `maim-message==0.6.8` in its own
virtualenv; **ours** = this repository (`src/`). 0.6.8 and ours run the same script
(`bench/targets/api_server.py`, public API-Server API only). Envelopes are ~680 bytes with a
100-character text Seg (as a 0.6.8 client encodes them). Ratios are ours divided by the
other target, from the same run.

## Results ({mode})

{_md_table(HEAD, rows(data))}

Metrics: S1 msgs/s = frames sent / time until the last `sys_ack` arrived. S2a latency =
send to reply received, one message in flight; S2b = pipelined, 32 in flight. S3
deliveries/s = clients x broadcasts / time from the trigger until the last delivery (0.6.8
has no broadcast: its script calls `send_message` once per connected user). S4
handshakes/s = connections / time to open them all (100 concurrent handshakes); RSS per
connection = (hub VmRSS with the connections open and settled - VmRSS before) / count. S5
time = send until the echoed message is fully received; peak growth = (VmHWM after - VmRSS
before) / frame size, fresh server per run; intact = the echoed Seg equals the one sent.
S6 (acknowledged delivery) runs for ours only and compares with S1a/S2b of the others.

## 0.7 peers (Socket.IO)

S7 sends the S1 load from 0.7-style clients: a direct Engine.IO WebSocket session
(`/ws/?EIO=4&transport=websocket`, CONNECT `40`) and every envelope as
`42["message",<envelope>]`, counted until the last `sys_ack`. **0.7.5** = the published
`maim-message==0.7.5` (python-socketio on aiohttp) in its own virtualenv, same script;
**ours (Socket.IO)** = our hub's Socket.IO dialect; **ours (0.6 wire)** = our hub under the
same load sent as raw 0.6 frames.

{_md_table(SIO_HEAD, sio_rows(data)) if sio_rows(data) else "(not run)"}

## Is the load generator the bottleneck?

Everything per message is done before the clock starts: frames are JSON-encoded and
masked up front, pipelined writes go out as pre-joined batches (128 frames, at most 2,048
unacknowledged per connection in S1), and replies are counted from frame headers (plus a
bounded `sys_ack` substring test on small frames), never JSON-decoded; the client runs on
uvloop when it is installed. The table gives CPU use over each measured window (median run,
% of one core; the server's from the nanosecond `schedstat` of each of its threads, the
load generator's from `process_time`): the server side should sit near 100% while the load
generator stays well below it. The null target does no JSON work at all; where its own CPU
is near 100% (S3: one Python write per client per broadcast) its rate is a floor for the
load generator's ceiling, and the load generator's CPU column is the evidence. Server CPU per
unit (server CPU time over the window / messages, deliveries, handshakes, or the one media
message in S5; in S2a every message of the window, warm-up included) is the hub's cost
independent of how busy the machine was: where a server sits well under 100%, other work
on the shared machine took its core, and this column is the steadier comparison.

{evidence(data)}

## Machine and versions

{facts}

Targets:
{targets}
"""


def summary_table(data: Dict):
    from rich.table import Table

    table = Table(title="maim_message benchmarks" + (" (smoke)" if data.get("smoke") else ""))
    keep = [0, 2, 3, 4, 5, 6, 7, 8, 9, 11]  # no scenario title, no goal text: fits a terminal
    for i in keep:
        table.add_column(HEAD[i], overflow="fold")
    for r in rows(data):
        table.add_row(*(r[i] for i in keep))
    return table
