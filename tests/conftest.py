"""Shared test helpers: free ports, the 0.6.8 virtualenv, a vendored copy of the package."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "src" / "maim_message"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _upstream_python(release: str, env_name: str) -> str:
    """Python of the virtualenv with a published maim-message release (created if needed)."""
    env = os.environ.get(env_name)
    if env and Path(env).exists():
        return env
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "upstream_venv.py"), release],
        check=True,
        capture_output=True,
        text=True,
    )
    path = out.stdout.strip().splitlines()[-1]
    os.environ[env_name] = path
    return path


def upstream_python_path() -> str:
    """Python of the virtualenv with the published maim-message 0.6.8."""
    return _upstream_python("0.6.8", "MAIM_UPSTREAM_PYTHON")


def upstream07_python_path() -> str:
    """Python of the virtualenv with the published maim-message 0.7.5."""
    return _upstream_python("0.7.5", "MAIM_UPSTREAM07_PYTHON")


@pytest.fixture(scope="session")
def upstream_python() -> str:
    return upstream_python_path()


@pytest.fixture(scope="session")
def upstream07_python() -> str:
    return upstream07_python_path()


def vendor_package(dest: Path) -> Path:
    """Copy our package to ``dest/astrbot/core/maibot/maim_message`` as AstrBot vendors it.

    Returns ``dest`` (put it on ``PYTHONPATH`` / use it as the working directory).
    """
    target = dest / "astrbot" / "core" / "maibot" / "maim_message"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    for pkg in (dest / "astrbot", dest / "astrbot" / "core", dest / "astrbot" / "core" / "maibot"):
        (pkg / "__init__.py").touch()
    return dest


@pytest.fixture
def vendored(tmp_path: Path) -> Path:
    return vendor_package(tmp_path)
