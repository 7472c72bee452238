"""Line protocol shared by the api_*.py scripts that the 0.6.8 interpreter runs.

Commands arrive on stdin as JSON lines ``{"id": n, "cmd": "...", ...}``; each gets exactly
one reply ``{"id": n, ...}`` (``{"id": n, "error": "..."}`` when it raised). Unsolicited
events (``{"event": "...", ...}``) and the plain line ``READY`` go to stdout. Everything the
0.6.8 package prints lands on stderr, because fd 1 is redirected there at import time.

This file is imported by the scripts only (never by the test process), and it must not
import ``maim_message`` itself.
"""

import asyncio
import json
import os
import socket
import sys
import threading
import time
import traceback

# Keep stdout for the protocol; anything else printing to fd 1 goes to stderr.
_OUT = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr


def emit(obj):
    """Write one protocol line (a dict as JSON, or a bare string such as READY)."""
    line = obj if isinstance(obj, str) else json.dumps(obj, default=repr)
    _OUT.write(line + "\n")
    _OUT.flush()


def hard_exit(code=0):
    """Leave without running the interpreter shutdown (0.6.8 can hang there)."""
    try:
        _OUT.flush()
    finally:
        os._exit(code)


def announce_package(extra=None):
    """Tell the test which maim_message this interpreter imported."""
    import maim_message

    info = {"event": "hello", "maim_message": maim_message.__file__, "python": sys.version}
    if extra:
        info.update(extra)
    emit(info)


async def wait_listening(host, port, timeout=15.0):
    """Poll until a TCP connect to host:port succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def poll(predicate, timeout, step=0.02):
    """Wait until ``predicate()`` is truthy; False on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def serve_commands(handlers):
    """Read commands until EOF or ``exit``; each command runs in its own task.

    ``handlers`` maps a command name to ``async def handler(cmd_dict) -> dict``.
    """
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    def reader():
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=reader, daemon=True).start()
    tasks = set()

    async def run(cmd):
        reply = {"id": cmd.get("id")}
        try:
            handler = handlers[cmd["cmd"]]
            reply.update(await handler(cmd) or {})
        except Exception as exc:
            reply["error"] = f"{type(exc).__name__}: {exc}"
            reply["traceback"] = traceback.format_exc()
        emit(reply)

    while True:
        line = await queue.get()
        if line is None:
            return
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd.get("cmd") == "exit":
            emit({"id": cmd.get("id"), "bye": True})
            return
        task = asyncio.ensure_future(run(cmd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
