"""What a configuration reload (SIGHUP, ``POST /api/admin/reload``) may change.

Keys, the admin tokens, the log level, the status interval and a few limits are applied
to the running hub; anything else (address, TLS, outbox, cluster, transport limits) needs
a restart, and a reload says so by name instead of silently ignoring it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, List, Tuple

from .settings import HubConfig

HUB_RELOADABLE = ("keys_file", "log_level", "status_interval")
LIMITS_RELOADABLE = ("rate_limit_per_second", "rate_limit_burst", "shutdown_grace")
SECTIONS = ("tls", "limits", "outbox", "cluster", "http", "admin")
_SECRET_SECTIONS = ("admin",)


def _key_set(config: HubConfig) -> Any:
    return sorted((e.digest, e.user, e.platforms, e.forward_to) for e in config.keys)


def _show(section: str, name: str, old: Any, new: Any) -> str:
    if section in _SECRET_SECTIONS:
        return f"{section}.{name}"
    return f"{section}.{name} ({old!r} -> {new!r})"


def compare(old: HubConfig, new: HubConfig) -> Tuple[List[str], List[str]]:
    """(changes a reload applies, changes that need a restart), as readable names."""
    applied: List[str] = []
    restart: List[str] = []
    for name in ("host", "port", "path", "log_format", *HUB_RELOADABLE):
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            target = applied if name in HUB_RELOADABLE else restart
            target.append(_show("hub", name, before, after))
    if _key_set(old) != _key_set(new):
        applied.append(f"keys ({len(old.keys)} -> {len(new.keys)})")
    for section in SECTIONS:
        before_section, after_section = getattr(old, section), getattr(new, section)
        for field in fields(before_section):
            before = getattr(before_section, field.name)
            after = getattr(after_section, field.name)
            if before == after:
                continue
            live = section == "admin" or (section == "limits" and field.name in LIMITS_RELOADABLE)
            (applied if live else restart).append(_show(section, field.name, before, after))
    return applied, restart


def apply_reloadable(running: HubConfig, new: HubConfig) -> None:
    """Copy the reloadable values of ``new`` into the running config (the rest stays)."""
    running.keys = list(new.keys)
    for name in HUB_RELOADABLE:
        setattr(running, name, getattr(new, name))
    running.admin = new.admin
    for name in LIMITS_RELOADABLE:
        setattr(running.limits, name, getattr(new.limits, name))
