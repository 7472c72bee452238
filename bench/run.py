"""The one command: every scenario against every target, then ``docs/benchmarks.md``.

    python -m bench                 # full run (about 9-15 minutes on 2 cores)
    python -m bench --smoke         # tiny counts, one run each (CI; under a minute)

Targets are separate server processes (``bench/targets``); each scenario run is a separate
load-generator process (``bench/loadgen.py``). Runs are interleaved across targets (run 1 of
every target, then run 2, ...) so that drift in machine load hits every target alike. A
target that fails to start, or dies, is reported as ``failed: <reason>`` in its cells; the
run goes on.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from . import report
from .scenarios import BY_ID, SCENARIOS, Scenario

ROOT = Path(__file__).resolve().parent.parent
TARGETS_DIR = ROOT / "bench" / "targets"
ALL_TARGETS = ("picows", "bare", "0.6.8", "ours", "0.7.5", "ours-0.6")
BASE_TARGETS = ("picows", "bare", "0.6.8", "ours")  # scenarios without their own target list
OURS_06 = "ours-0.6"  # ours, driven over the 0.6 wire in the Socket.IO scenarios (S7)
NULL = "null"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


@dataclass
class Target:
    name: str
    python: str
    script: str
    env: Dict[str, str]
    error: Optional[str] = None  # set when the target cannot run at all
    version: str = ""


def upstream_python(version: str = "0.6.8") -> str:
    env = os.environ.get("MAIM_UPSTREAM_PYTHON" if version == "0.6.8"
                         else "MAIM_UPSTREAM07_PYTHON")
    if env and Path(env).exists():
        return env
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "upstream_venv.py"), version],
        capture_output=True, text=True, timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(_tail(out.stderr) or "upstream_venv.py failed")
    return out.stdout.strip().splitlines()[-1]


def _tail(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def make_targets(names: List[str]) -> Dict[str, Target]:
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out: Dict[str, Target] = {}
    for name in names:
        if name in ("bare", "picows", NULL):
            script = {"bare": "bare_server.py", "picows": "picows_server.py"}.get(
                name, "null_server.py")
            t = Target(name, sys.executable, str(TARGETS_DIR / script), base_env)
            if name == "picows" and importlib.util.find_spec("picows") is None:
                t.error = "picows is not installed (pip install picows)"
            out[name] = t
        elif name in ("0.6.8", "0.7.5"):
            t = Target(name, "", str(TARGETS_DIR / "api_server.py"), base_env)
            try:
                t.python = upstream_python(name)
            except Exception as e:  # reported in the table, never fatal
                t.error = f"no {name} virtualenv: {e}"
            out[name] = t
        elif name in ("ours", OURS_06):
            env = dict(base_env, PYTHONPATH=str(ROOT / "src"))
            t = Target(name, sys.executable, str(TARGETS_DIR / "api_server.py"), env)
            probe = subprocess.run(
                [sys.executable, "-c", "from maim_message.server import WebSocketServer"],
                env=env, capture_output=True, text=True, cwd=str(ROOT / "bench"), timeout=60,
            )
            if probe.returncode != 0:
                t.error = f"import: {_tail(probe.stderr)}"
            out[name] = t
        else:
            raise SystemExit(f"unknown target {name!r}")
    return out


def cpu_split() -> Optional[tuple]:
    """(server cpus, load generator cpus): one core each side when there are two or more."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


PIN: Optional[tuple] = None  # set by main(): None = let the scheduler place processes


def _pin(cpus: Optional[set]):
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class Server:
    def __init__(self, target: Target, sc: Scenario, logdir: Path):
        self.target = target
        self.port = free_port()
        self.log = logdir / f"{target.name}-{sc.id}-{self.port}.log"
        args = [target.python, target.script, "--port", str(self.port)]
        if sc.echo:
            args.append("--echo")
        if sc.acked:
            args.append("--acked-delivery")
        self.error: Optional[str] = None
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                env=target.env, cwd=str(TARGETS_DIR), preexec_fn=_pin(PIN and PIN[0]),
            )
        self._wait_ready(60.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline()
                if line.startswith(b"READY"):
                    self.target.version = self.target.version or line.decode().strip()[6:]
                    break
                if not line:  # EOF: the process exited
                    break
            elif self.proc.poll() is not None:
                break
        if not line.startswith(b"READY"):
            self.stop()
            self.error = f"did not start: {_last_line(self.log) or 'no READY'}"
            return
        while time.monotonic() < deadline:  # listening for real (0.6.8 starts in a task)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.error = "not listening after READY"

    def alive_error(self) -> Optional[str]:
        if self.error:
            return self.error
        code = self.proc.poll()
        if code is not None:
            return f"server exited ({code}): {_last_line(self.log)}"
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


def run_loadgen(server: Server, sc: Scenario, params: Dict) -> Dict:
    err = server.alive_error()
    if err:
        return {"ok": False, "error": err}
    params = dict(params, timeout=params.get("timeout", sc.timeout))
    if sc.socketio and server.target.name != OURS_06:
        params["socketio"] = True
    args = [sys.executable, "-m", "bench.loadgen", "--port", str(server.port),
            "--pid", str(server.proc.pid), "--scenario", sc.kind, "--params", json.dumps(params)]
    try:
        out = subprocess.run(args, capture_output=True, text=True, cwd=str(ROOT),
                             timeout=params["timeout"] + 60, preexec_fn=_pin(PIN and PIN[1]))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "load generator timed out"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"load generator crashed: {_tail(out.stderr)}"}
    res = json.loads(lines[-1])
    if not res["ok"]:
        res["error"] = server.alive_error() or res["error"]
    return res


def summarize(runs: List[Dict], sc: Scenario) -> Dict:
    good = [r["metrics"] for r in runs if r.get("ok")]
    if not good:
        errs = [r.get("error", "?") for r in runs]
        return {"ok": False, "error": errs[0] if errs else "not run", "runs": runs}
    if len(good) < len(runs):  # partial failure counts as failure: numbers would mislead
        bad = next(r for r in runs if not r.get("ok"))
        return {"ok": False, "error": f"{len(runs) - len(good)} of {len(runs)} runs failed: "
                f"{bad.get('error')}", "runs": runs}
    med = {}
    for k in good[0]:
        vals = [g[k] for g in good]
        if isinstance(vals[0], bool):
            med[k] = all(vals)
        elif isinstance(vals[0], (int, float)):
            med[k] = statistics.median(vals)
    return {"ok": True, "median": med, "runs": runs}


def plan(scenarios: List[Scenario], targets: List[str]) -> List[tuple]:
    out = []
    for sc in scenarios:
        names = [t for t in targets if t in (sc.targets or BASE_TARGETS)]
        if sc.null and NULL not in names:
            names.append(NULL)
        out.append((sc, names))
    return out


def run_all(args) -> Dict:
    console = Console(stderr=True)
    scenarios = [BY_ID[s] for s in args.scenarios] if args.scenarios else SCENARIOS
    targets = list(args.targets)
    work = plan(scenarios, targets)

    def runs_of(sc: Scenario) -> int:
        return args.runs or (1 if args.smoke else sc.runs)

    tmap = make_targets(sorted({t for _, names in work for t in names}))
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="maim-bench-"))
    logdir.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict[str, Dict]] = {}
    total = sum(runs_of(sc) * len(names) for sc, names in work)
    started = time.time()
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=console,
                  disable=args.quiet) as progress:
        bar = progress.add_task("starting", total=total)
        for sc, names in work:
            params = sc.smoke if args.smoke else sc.full
            runs = runs_of(sc)
            per: Dict[str, List[Dict]] = {n: [] for n in names}
            servers: Dict[str, Server] = {}
            for r in range(runs):
                for name in names:
                    t = tmap[name]
                    progress.update(bar, description=f"{sc.id} {sc.kind:<14} {name:<6} "
                                    f"run {r + 1}/{runs}")
                    if t.error:
                        per[name].append({"ok": False, "error": t.error})
                        progress.advance(bar)
                        continue
                    if sc.fresh or name not in servers:
                        servers[name] = Server(t, sc, logdir)
                    per[name].append(run_loadgen(servers[name], sc, params))
                    if sc.fresh:
                        servers.pop(name).stop()
                    progress.advance(bar)
                    res = per[name][-1]
                    if not res.get("ok") and not args.quiet:
                        console.print(f"  [red]{sc.id} {name}: {res.get('error')}[/red]")
            for s in servers.values():
                s.stop()
            results[sc.id] = {n: summarize(v, sc) for n, v in per.items()}
    return {
        "smoke": args.smoke,
        "runs": {sc.id: runs_of(sc) for sc, _ in work},
        "elapsed_s": round(time.time() - started, 1),
        "load_start": load_start,
        "command": "python -m bench" + (" --smoke" if args.smoke else ""),
        "pinning": (f"server on CPU {sorted(PIN[0])}, load generator on CPU {sorted(PIN[1])}"
                    if PIN else "none"),
        "targets": {n: {"error": t.error, "version": t.version, "python": t.python}
                    for n, t in tmap.items()},
        "scenarios": [sc.id for sc, _ in work],
        "results": results,
        "logdir": str(logdir),
    }


def main(argv: Optional[List[str]] = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] == "cluster":  # python -m bench cluster [--smoke]
        from .cluster_bench import main as cluster_main

        cluster_main(args_in[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny counts, 1 run (CI)")
    ap.add_argument("--runs", type=int, help="runs per cell (median); default 3 (5 for the "
                    "short S1-S3 windows), smoke 1")
    ap.add_argument("--targets", nargs="+", default=list(ALL_TARGETS), choices=ALL_TARGETS)
    ap.add_argument("--scenarios", nargs="+", choices=sorted(BY_ID), help="default: all")
    ap.add_argument("--out", default=None, help="markdown report (default docs/benchmarks.md;"
                    " smoke: none)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--logdir", default=None, help="server logs (default: a temp dir)")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    ap.add_argument("--render", metavar="JSON", help="only re-render the report from a "
                    "--json file of an earlier run")
    ap.add_argument("--pin", action="store_true", help="pin the server to one core and the "
                    "load generator to the other(s) (off by default: on a shared machine the "
                    "scheduler's placement is the fairer one)")
    args = ap.parse_args(argv)
    global PIN
    PIN = cpu_split() if args.pin else None
    if args.render:
        data = json.loads(Path(args.render).read_text())
    else:
        data = run_all(args)
        data["machine"] = report.machine_facts(data["targets"])
        data["machine"]["load average at start"] = data.pop("load_start")
    out = args.out or (None if args.smoke else str(ROOT / "docs" / "benchmarks.md"))
    text = report.render(data)
    if out:
        Path(out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))
    if not args.quiet:
        Console().print(report.summary_table(data))
        if out:
            Console().print(f"wrote {out} in {data['elapsed_s']} s; server logs in "
                            f"{data['logdir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
