"""Data model of both families: ``api`` (API-Server, strict) and ``legacy`` (root exports).

The two families share class names but not types; import from the submodule you need.
"""

from __future__ import annotations

from . import api, legacy

__all__ = ["api", "legacy"]
