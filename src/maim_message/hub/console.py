"""What a person watching the terminal sees: the start-up summary and config checks.

Uses ``rich`` when it is installed (tables, colour on a terminal), plain text otherwise.
Secrets never appear here except the generated key, printed once so it can be used.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, TextIO, Tuple

from .. import __version__
from ..core.redact import safe_url
from .config import HubConfig

try:  # optional: the hub works without rich
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    HAVE_RICH = True
except ImportError:  # pragma: no cover - depends on the installation
    HAVE_RICH = False


def _settings_rows(config: HubConfig, port: Optional[int]) -> List[Tuple[str, str]]:
    shown = HubConfig(host=config.host, port=port or config.port, path=config.path,
                      tls=config.tls)
    http_base = shown.url.replace("wss://", "https://").replace("ws://", "http://")
    http_base = http_base[: -len(config.path)] if config.path else http_base
    tls = "off"
    if config.tls.enabled:
        tls = f"on (cert {config.tls.certfile}" + (
            ", client certificates required)" if config.tls.verify_client else ")")
    outbox = {
        "memory": "memory (at-least-once while the hub runs)",
        "sqlite": f"sqlite {_absolute(config.outbox.path)} (durable across restarts)",
        "none": "none (fire-and-forget)",
    }[config.outbox.backend]
    cluster = config.cluster.backend
    if config.cluster.backend == "redis":
        shards = [safe_url(u.strip()) for u in (config.cluster.redis_url or "").split(",")
                  if u.strip()]
        cluster += (f" {', '.join(shards)} ({config.cluster.channel_prefix}, shared port "
                    "via SO_REUSEPORT)")
        if config.outbox.backend != "none":  # the pairs' streams hold what is unacked
            outbox = "the cluster's Redis streams (kept until acked, on any node)"
    rows = [
        ("WebSocket", shown.url),
        ("TLS", tls),
        ("config", config.source or "embedded defaults"),
        ("outbox", outbox),
        ("cluster", cluster),
        ("max message", f"{config.limits.max_message_size} bytes"),
        ("health", f"{http_base}/healthz  {http_base}/readyz"),
    ]
    if config.http.metrics:
        guard = " (bearer token)" if config.admin.metrics_protected else ""
        rows.append(("metrics", f"{http_base}/metrics{guard}"))
    if config.http.dashboard:
        rows.append(("live page", f"{http_base}/"))
    rows.append(("admin API", f"{http_base}/api/admin/ (admin token: "
                 + ("configured)" if config.admin.configured else "generated, below)")))
    return rows


def _http_base(rows: List[Tuple[str, str]]) -> str:
    return dict(rows)["health"].split()[0][: -len("/healthz")]


def _admin_lines(base: str, token: str, dashboard: bool) -> List[str]:
    lines = [
        f"Admin token: {token}",
        "  (generated for this run only and shown once: set admin.token in the config or",
        "   MAIM_HUB_ADMIN_TOKEN to keep one)",
    ]
    if dashboard:
        lines.append(f"  live page: {base}/#token={token}")
    lines.append(f"  api:       curl -H 'Authorization: Bearer {token}' "
                 f"{base}/api/admin/connections")
    return lines


def _key_rows(hub: Any) -> List[Tuple[str, str, str, str, str]]:
    return [
        (e.label, e.user, ", ".join(e.platforms) or "any", e.forward_to or "-", e.source)
        for e in hub.keys.entries
    ]


def _usage_lines(url: str, key: str) -> List[str]:
    return [
        f"API key: {key}",
        "  (generated for this run only and shown once: put keys in a config file,",
        "   MAIM_HUB_KEYS=key=user or --keys key=user to keep them)",
        f"  connect: {url}?api_key={key}&platform=<platform>",
        f"           or headers x-apikey: {key} and x-platform: <platform>",
        f"  python:  WebSocketClient(ClientConfig(url=\"{url}\", api_key=\"{key}\", "
        "platform=\"qq\"))",
    ]


def _secret_lines(hub: Any, url: str, rows: List[Tuple[str, str]]) -> List[str]:
    """The generated key and admin token, with how to use them (shown this once)."""
    lines: List[str] = []
    if hub.generated_key:
        lines += _usage_lines(url, hub.generated_key)
    if hub.generated_admin_token:
        lines += _admin_lines(_http_base(rows), hub.generated_admin_token,
                              hub.config.http.dashboard)
    return lines


def print_summary(hub: Any, out: Optional[TextIO] = None) -> None:
    """The start-up summary: where the hub listens, its keys (fingerprints), endpoints."""
    out = out or sys.stdout
    rows = _settings_rows(hub.config, hub.port)
    keys = _key_rows(hub)
    url = rows[0][1]
    if HAVE_RICH:
        console = Console(file=out, soft_wrap=True, highlight=False)
        table = Table(title=f"maim_message hub {__version__}", show_header=False,
                      title_justify="left")
        table.add_column(style="bold cyan")
        table.add_column()
        for name, value in rows:
            table.add_row(name, escape(value))
        console.print(table)
        key_table = Table(title="API keys (fingerprints; keys are never logged)",
                          title_justify="left")
        for column in ("key", "user", "platforms", "forward_to", "from"):
            key_table.add_column(column)
        for row in keys:
            key_table.add_row(*(escape(v) for v in row))
        console.print(key_table)
        for line in _secret_lines(hub, url, rows):
            console.print(escape(line), style="bold yellow" if line.startswith(("API", "Admin"))
                          else None)
        console.print("Press Ctrl+C (or send SIGTERM) to stop gracefully.")
    else:
        out.write(f"maim_message hub {__version__}" + "\n")
        for name, value in rows:
            out.write(f"  {name:<12} {value}" + "\n")
        out.write("API keys (fingerprints; keys are never logged):" + "\n")
        for label, user, plats, forward, source in keys:
            out.write(f"  {label}  user={user}  platforms={plats}  forward_to={forward}  "
                      f"from={source}" + "\n")
        for line in _secret_lines(hub, url, rows):
            out.write(line + "\n")
        out.write("Press Ctrl+C (or send SIGTERM) to stop gracefully." + "\n")
    out.flush()


def print_check(config: HubConfig, out: Optional[TextIO] = None) -> None:
    """What ``--check-config`` prints for a valid configuration."""
    out = out or sys.stdout
    out.write(f"config OK: {config.source or 'embedded defaults'}" + "\n")
    for name, value in _settings_rows(config, None):
        out.write(f"  {name:<12} {value}" + "\n")
    if config.keys:
        for entry in config.keys:
            forward = f", forward_to {entry.forward_to}" if entry.forward_to else ""
            out.write(f"  key          {entry.label} -> user {entry.user} "
                      f"(platforms: {', '.join(entry.platforms) or 'any'}{forward}; "
                      f"{entry.source})\n")
    else:
        out.write("  keys         none configured: a key is generated at start-up" + "\n")
    out.flush()


def print_problems(problems: Sequence[str], out: Optional[TextIO] = None) -> None:
    out = out or sys.stderr
    out.write(f"config has {len(problems)} problem{'s' if len(problems) != 1 else ''}:" + "\n")
    for line in problems:
        out.write(f"  {line}" + "\n")
    out.flush()


def _absolute(path: Optional[str]) -> str:
    """A state file's path as the hub opens it (relative ones: from the working
    directory), so the operator sees which file a restart will read."""
    return str(Path(path).absolute()) if path else "(none)"  # (opened as given: no ~)
