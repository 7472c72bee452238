"""Reading a TOML config file, with the line number of every key for error messages."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .settings import HubConfigError


def _toml_module() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise HubConfigError([
            "reading a TOML config on Python < 3.11 needs the 'tomli' package, which "
            "the hub extra installs: pip install 'maim_message[hub]' (or pip install tomli)"
        ]) from None
    return tomli


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_SYNTAX_LINE = re.compile(r"at line (\d+)")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def line_index(text: str) -> Dict[str, int]:
    """Dotted key -> line number (1-based), from a plain scan of the TOML source.

    Array tables are numbered (``keys[0].user``). Good enough to point at a line; values
    spanning lines (multi-line arrays, inline tables) point at their first line.
    """
    lines: Dict[str, int] = {}
    counts: Dict[str, int] = {}
    current = ""
    in_multiline = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if raw.count('"""') % 2 == 1 or raw.count("'''") % 2 == 1:
                in_multiline = False
            continue
        match = _ARRAY_TABLE.match(raw)
        if match:
            name = _unquote(match.group(1))
            index = counts.get(name, 0)
            counts[name] = index + 1
            current = f"{name}[{index}]"
            lines.setdefault(current, number)
            continue
        match = _TABLE.match(raw)
        if match:
            current = _unquote(match.group(1))
            lines.setdefault(current, number)
            continue
        match = _ASSIGN.match(raw)
        if match:
            key = _unquote(match.group(1))
            lines.setdefault(f"{current}.{key}" if current else key, number)
            rest = raw[match.end():]
            if rest.count('"""') == 1 or rest.count("'''") == 1:
                in_multiline = True
    return lines


def _unquote(dotted: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in dotted.split("."))


class Origins:
    """Where each value came from, to name it in error messages."""

    def __init__(self, file: Optional[str], lines: Dict[str, int]) -> None:
        self.file = file
        self.lines = lines
        self.override: Dict[str, str] = {}

    def where(self, dotted: str) -> str:
        if dotted in self.override:
            return self.override[dotted]
        if self.file is None:
            return "defaults"
        probe = dotted
        while probe:
            if probe in self.lines:
                return f"{self.file}:{self.lines[probe]}"
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return self.file



def read_file(path: str, problems: List[str]) -> Tuple[Dict[str, Any], Origins]:
    toml = _toml_module()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{path}: cannot read config file: {exc.strerror or exc}")
        return {}, Origins(path, {})
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: config file is not UTF-8: {exc}")
        return {}, Origins(path, {})
    origins = Origins(path, line_index(text))
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _SYNTAX_LINE.search(str(exc))
        where = f"{path}:{line if isinstance(line, int) else line.group(1)}" if line else path
        problems.append(f"{where}: TOML syntax error: {exc}")
        return {}, origins
    return data, origins
