"""JSON text for legacy frames: orjson on the hot path, stdlib ``json`` as the fallback.

0.6.8 peers accept any JSON text (compact or not, escaped or raw UTF-8), so the encoder
emits compact UTF-8. The stdlib fallback covers values orjson refuses (non-string dict
keys, integers beyond 64 bits) and inputs orjson rejects but ``json`` reads (``NaN``).
"""

from __future__ import annotations

import json
from typing import Any, Union

try:  # pragma: no cover - exercised implicitly
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _orjson = None  # type: ignore[assignment]

__all__ = ["dumps_bytes", "dumps_text", "loads"]


def _std_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def dumps_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON; raises ``TypeError`` for values JSON cannot represent."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except TypeError:
            pass
    return _std_dumps(obj).encode("utf-8")


def dumps_text(obj: Any) -> str:
    return dumps_bytes(obj).decode("utf-8")


def loads(data: Union[str, bytes, bytearray, memoryview]) -> Any:
    """Decode one JSON value; raises ``ValueError`` when the text is not JSON."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except ValueError:
            pass
    if isinstance(data, memoryview):
        data = bytes(data)
    return json.loads(data)
