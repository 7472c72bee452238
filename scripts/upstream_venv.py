"""Create (once) and locate the virtualenvs holding the published maim-message releases.

Interop tests and benchmarks run the published packages as subprocesses from these
virtualenvs, so that our package is never imported next to them. Two generations:

- ``0.6.8`` (raw WebSocket), in ``$MAIM_UPSTREAM_VENV`` or ``.cache/upstream-0.6.8``;
- ``0.7.5`` (Socket.IO / Engine.IO v4), in ``$MAIM_UPSTREAM07_VENV`` or
  ``.cache/upstream-0.7.5``.

``python scripts/upstream_venv.py [0.6.8|0.7.5]`` prints the path of that venv's python on
stdout (0.6.8 when no version is given). A venv is reused while it stays valid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "0.6.8"
# version -> (environment variable naming the venv dir, extra requirements)
RELEASES: Dict[str, Tuple[str, List[str]]] = {
    # 0.6.8's client needs the new asyncio websockets client (>= 14).
    "0.6.8": ("MAIM_UPSTREAM_VENV", ["websockets>=14"]),
    # 0.7.5 declares python-socketio and aiohttp unpinned: it gets what the index has.
    "0.7.5": ("MAIM_UPSTREAM07_VENV", []),
}


def venv_dir(version: str = DEFAULT) -> Path:
    env_name = RELEASES[version][0]
    return Path(os.environ.get(env_name, ROOT / ".cache" / f"upstream-{version}"))


def python_of(d: Path) -> Path:
    return d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ready(py: Path, version: str) -> bool:
    if not py.exists():
        return False
    probe = f"import importlib.metadata as m; assert m.version('maim_message') == '{version}'"
    # PYTHONPATH may point at our own source tree (a developer's checkout): not the venv's
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(py), "-c", probe], capture_output=True, env=env).returncode == 0


def ensure(version: str = DEFAULT) -> Path:
    if version not in RELEASES:
        raise SystemExit(f"unknown release {version!r}; known: {', '.join(RELEASES)}")
    d = venv_dir(version)
    py = python_of(d)
    if _ready(py, version):
        return py
    d.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(d)
    pin = f"maim-message=={version}"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", pin,
         *RELEASES[version][1]],
        check=True,
        stdout=sys.stderr,
    )
    if not _ready(py, version):
        raise SystemExit(f"could not install {pin} into {d}")
    return py


if __name__ == "__main__":
    print(ensure(sys.argv[1] if len(sys.argv) > 1 else DEFAULT))
