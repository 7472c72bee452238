"""The benchmark harness cannot rot: its smoke mode runs every scenario on every target.

Never asserts a speed: only that the one command completes and reports a result for every
scenario and target (and that bare and 0.6.8, which need nothing from us, never fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, upstream07_python_path, upstream_python_path

sys.path.insert(0, str(ROOT))
from bench.scenarios import SCENARIOS

pytestmark = pytest.mark.timeout(300)


def _ours_importable() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "from maim_message.server import WebSocketServer"],
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        cwd=str(ROOT / "bench"),
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, MAIM_UPSTREAM_PYTHON=upstream_python_path(),
               MAIM_UPSTREAM07_PYTHON=upstream07_python_path())
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--quiet",
         "--json", str(out / "results.json"), "--out", str(out / "benchmarks.md"),
         "--logdir", str(out / "logs")],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    data["markdown"] = (out / "benchmarks.md").read_text()
    return data


def test_every_scenario_reported_for_every_target(smoke: dict) -> None:
    assert smoke["smoke"] is True
    for sc in SCENARIOS:
        assert sc.id in smoke["results"], sc.id
        expected = set(sc.targets or ("bare", "0.6.8", "ours"))
        if sc.null:
            expected.add("null")
        assert expected <= set(smoke["results"][sc.id]), (sc.id, smoke["results"][sc.id])
        assert f"| {sc.id} |" in smoke["markdown"]


@pytest.mark.parametrize("target", ["bare", "0.6.8", "0.7.5", "null"])
def test_reference_targets_never_fail(smoke: dict, target: str) -> None:
    for sc in SCENARIOS:
        res = smoke["results"][sc.id].get(target)
        if res is not None:
            assert res["ok"], (sc.id, target, res.get("error"))


def test_ours_runs_every_scenario(smoke: dict) -> None:
    if not _ours_importable():
        pytest.xfail("our server does not import yet")
    assert "/src/maim_message" in smoke["targets"]["ours"]["version"]  # ours, not 0.6.8
    assert "0.6.8" in smoke["targets"]["0.6.8"]["version"]
    assert "0.7.5" in smoke["targets"]["0.7.5"]["version"]
    for sc in SCENARIOS:
        res = smoke["results"][sc.id]["ours"]
        if sc.acked and "not available in this build" in str(res.get("error")):
            continue  # S6 hook: acknowledged delivery not in this build yet
        assert res["ok"], (sc.id, res.get("error"))


def test_media_delivered_intact(smoke: dict) -> None:
    for sid in ("S5a", "S5b"):
        for target, res in smoke["results"][sid].items():
            if res["ok"]:
                assert res["median"]["intact"] is True, (sid, target)


def test_readme_documents_the_command() -> None:
    assert "python -m bench" in Path(ROOT, "bench", "README.md").read_text()
