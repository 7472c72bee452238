"""The service files in examples/ parse and say what the hub needs (docs/hub.md).

docker-compose.yml: YAML, a hub and a Redis, the hub on the cluster backend pointing at
that Redis, its config mounted from examples/hub.toml (which validates with the compose
environment), a health check on the hub's own endpoint. maim-hub.service: the keys of a
unit that starts, reloads (SIGHUP) and stops (SIGTERM) the hub; ``systemd-analyze verify``
on it where the machine has systemd-analyze.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from maim_message.hub.config import load_config

from .conftest import ROOT

EXAMPLES = ROOT / "examples"


def compose() -> Dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is a test dependency (.[test])")
    data: Dict[str, Any] = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text("utf-8"))
    return data


def substitute(value: str, env: Dict[str, str]) -> str:
    """Compose's ``${VAR:?message}`` / ``${VAR}`` interpolation."""
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: env[m.group(1)], value)


def test_compose_runs_the_hub_on_redis_with_the_example_config() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == {"hub", "redis"}
    redis, hub = services["redis"], services["hub"]
    assert redis["image"].startswith("redis:")
    assert "redis-cli" in redis["healthcheck"]["test"]

    assert hub["build"]["dockerfile"] == "examples/Dockerfile"
    assert (EXAMPLES / hub["build"]["context"]).resolve() == ROOT.resolve()
    assert (EXAMPLES / "Dockerfile").read_text("utf-8").count("maim-message") >= 1
    assert hub["command"][:3] == ["serve", "--config", "/etc/maim-hub/hub.toml"]
    assert hub["depends_on"]["redis"]["condition"] == "service_healthy"
    assert any("/readyz" in part for part in hub["healthcheck"]["test"])
    assert hub["stop_signal"] == "SIGTERM"
    assert any(port.endswith(":18040") for port in hub["ports"])
    mounted = {v.split(":")[1]: v.split(":")[0] for v in hub["volumes"]}
    config_file = EXAMPLES / mounted["/etc/maim-hub/hub.toml"]
    assert config_file == EXAMPLES / "hub.toml" and config_file.is_file()

    env = {k: str(v) for k, v in hub["environment"].items()}
    assert env["MAIM_HUB_HOST"] == "0.0.0.0"
    assert env["MAIM_HUB_CLUSTER_BACKEND"] == "redis"
    assert env["MAIM_HUB_CLUSTER_REDIS_URL"].startswith("redis://redis:")  # the service
    # secrets come from the caller's environment, never from the file
    secrets = {"MAIM_HUB_ADMIN_TOKEN": "a" * 32, "NAPCAT_HUB_KEY": "n" * 32,
               "MAIBOT_HUB_KEY": "m" * 32}
    for name in secrets:
        assert env[name].startswith("${" + name + ":?")
    resolved = {k: substitute(v, secrets) for k, v in env.items()}
    config = load_config(str(config_file), env=resolved, check_files=False)
    assert config.host == "0.0.0.0" and config.cluster.backend == "redis"
    assert config.cluster.redis_url == "redis://redis:6379/0"
    assert config.admin.configured
    assert {e.user for e in config.keys} == {"napcat", "maibot"}
    assert "redis-data" in data["volumes"]


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((EXAMPLES / "maim-hub.service").read_text("utf-8"))
    return parser


def test_systemd_unit_starts_reloads_and_stops_the_hub() -> None:
    parsed = unit()
    service = parsed["Service"]
    start = service["ExecStart"].split()
    assert start[0].endswith("/maim-message") and start[1] == "serve"
    assert start[start.index("--config") + 1] == "/etc/maim-hub/hub.toml"
    assert "--log-format" in start
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/maim-hub/")
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in parsed["Unit"]["After"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # the unit's ExecStart must exist for verify: point it at this interpreter
    text = (EXAMPLES / "maim-hub.service").read_text("utf-8").replace(
        "/opt/maim-hub/bin/maim-message", f"{sys.executable} -m maim_message")
    path = tmp_path / "maim-hub.service"
    path.write_text(text, encoding="utf-8")
    out = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    for problem in ("Unknown key", "Unknown section", "not executable", "Invalid", "Failed"):
        assert problem not in report, report
