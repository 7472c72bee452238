"""The cluster benchmark cannot rot: its smoke mode runs all five configurations.

Never asserts a speed: only that ``python -m bench cluster --smoke`` completes, lost and
duplicated nothing, and prints the headline JSON line the cluster goals are read from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.timeout(300)


def test_cluster_bench_smoke_reports_every_configuration() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            raise RuntimeError("redis-server is not installed (scripts/test installs it)")
        pytest.skip("redis-server not installed")
    pytest.importorskip("redis")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "cluster", "--smoke", "--idle", "50"],
        cwd=str(ROOT), env=dict(os.environ), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    headline = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("node_cpu_us_per_msg_single", "node_cpu_us_per_msg_cluster",
                "redis_cmds_per_msg", "redis_cpu_us_per_msg", "lost", "duplicates"):
        assert key in headline, key
    assert headline["lost"] == 0 and headline["duplicates"] == 0
    assert len(headline["rows"]) == 5
    assert any("2 Redis (sharded)" in name for name in headline["rows"])
    assert "| 1 node (local) |" in proc.stdout
