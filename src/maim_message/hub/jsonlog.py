"""``--log-format json``: one JSON object per line, for log shippers (Loki, ELK, journald).

Fields: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, and when the record
carries them (``extra=``): ``uuid``, ``user``, ``platform``, ``key_fingerprint``,
``close_code``, ``remote``. The text passes through a :class:`Redactor` of the hub's
secrets first, so a key can never reach the output even from a third-party logger.
Used by the CLI (the application); the library itself never installs handlers.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from ..core.codec import dumps
from ..core.redact import Redactor

FIELDS = ("uuid", "user", "platform", "key_fingerprint", "close_code", "remote")


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Optional[Redactor] = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor()

    def format(self, record: logging.LogRecord) -> str:
        redact = self.redactor
        obj: Dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                obj[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            obj["exc"] = redact(self.formatException(record.exc_info))
        return dumps(obj).decode("utf-8")
