"""Create (once) and locate the virtualenv holding the published maim-message 0.6.8.

Interop tests and benchmarks run 0.6.8 as subprocesses from this virtualenv, so that our
package is never imported next to it. Prints the path of the venv's python on stdout.
The venv lives in ``$MAIM_UPSTREAM_VENV`` or ``.cache/upstream-0.6.8`` and is reused
while it stays valid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = "maim-message==0.6.8"
# 0.6.8's client needs the new asyncio websockets client (>= 14).
EXTRA = ["websockets>=14"]


def venv_dir() -> Path:
    return Path(os.environ.get("MAIM_UPSTREAM_VENV", ROOT / ".cache" / "upstream-0.6.8"))


def python_of(d: Path) -> Path:
    return d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ready(py: Path) -> bool:
    if not py.exists():
        return False
    probe = "import importlib.metadata as m; assert m.version('maim_message') == '0.6.8'"
    return subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0


def ensure() -> Path:
    d = venv_dir()
    py = python_of(d)
    if _ready(py):
        return py
    d.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(d)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", PIN, *EXTRA],
        check=True,
        stdout=sys.stderr,
    )
    if not _ready(py):
        raise SystemExit(f"could not install {PIN} into {d}")
    return py


if __name__ == "__main__":
    print(ensure())
