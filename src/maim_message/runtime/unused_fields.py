"""Config fields kept for 0.6.8 compatibility that this library does not act on.

They must stay accepted (the spec and 0.6.8 code pass them), but a value that silently
does nothing misleads; so a field set to anything but its default is logged once per
process with what to use instead. docs/migration.md lists them.
"""

from __future__ import annotations

import logging
from dataclasses import MISSING, fields
from typing import Any, Dict, Mapping, Set, Tuple

logger = logging.getLogger("maim_message.config")

_LOGGING = "configure the 'maim_message' logger with the logging module instead"

# field -> why it does nothing / what to use instead
SERVER_UNUSED: Mapping[str, str] = {
    "enable_stats": "statistics are always counted (get_stats())",
    "stats_callback": "never called (as in 0.6.8); poll get_stats() instead",
    "log_level": _LOGGING,
    "custom_logger": _LOGGING,
    "message_cache_ttl": "the outbox keeps messages outbox_ttl seconds",
    "message_cache_max_size": "the outbox keeps outbox_max_per_pair messages per pair",
    "message_cache_cleanup_interval": "the outbox expires entries every outbox_ttl / 10 s",
}
CLIENT_UNUSED: Mapping[str, str] = {
    "enable_stats": "statistics are always counted (get_stats())",
    "stats_callback": "never called (as in 0.6.8); poll get_stats() instead",
    "log_level": _LOGGING,
    "custom_logger": _LOGGING,
    "enable_connection_log": _LOGGING,
}
MULTI_CLIENT_UNUSED: Mapping[str, str] = CLIENT_UNUSED

_warned: Set[Tuple[str, str]] = set()


def _defaults(config: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for f in fields(config):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def warn_unused_fields(config: Any, unused: Mapping[str, str]) -> None:
    """Log once per (config class, field) each field set away from its default."""
    defaults = _defaults(config)
    owner = type(config).__name__
    for name, why in unused.items():
        if name not in defaults or getattr(config, name, None) == defaults[name]:
            continue
        if (owner, name) in _warned:
            continue
        _warned.add((owner, name))
        logger.warning("%s.%s is accepted for 0.6.8 compatibility but has no effect: %s",
                       owner, name, why)
