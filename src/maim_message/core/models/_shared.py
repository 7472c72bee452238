"""Rules shared by the API and legacy data classes.

``Seg`` serialises identically in both families, and several 0.6.8 ``to_dict()`` methods
go through ``dataclasses.asdict``; :func:`plain` reproduces that conversion (nested
dataclasses become dicts, containers are copied) without its per-call reflection, using
hand-written converters registered for the classes that sit on the hot path.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Type, TypeVar

_ATOMIC = frozenset({str, int, float, bool, type(None), bytes, complex})

#: exact type -> converter producing the ``dataclasses.asdict`` form of an instance
ASDICT: Dict[type, Callable[[Any], Dict[str, Any]]] = {}

_S = TypeVar("_S")


def plain(value: Any) -> Any:
    """``dataclasses.asdict``'s value conversion: same output, fast for common shapes."""
    t = type(value)
    if t in _ATOMIC:
        return value
    conv = ASDICT.get(t)
    if conv is not None:
        return conv(value)
    if t is list:
        return [v if type(v) in _ATOMIC else plain(v) for v in value]
    if t is dict:
        return {
            (k if type(k) in _ATOMIC else plain(k)): (v if type(v) in _ATOMIC else plain(v))
            for k, v in value.items()
        }
    return _plain_slow(value)


def _plain_slow(value: Any) -> Any:
    """Rare shapes (user dataclasses, tuples, dict/list subclasses), as ``asdict`` does."""
    t = type(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return t(*[plain(v) for v in value])
    if isinstance(value, (list, tuple)):
        return t(plain(v) for v in value)
    if isinstance(value, dict):
        items = ((plain(k), plain(v)) for k, v in value.items())
        if hasattr(value, "default_factory"):  # defaultdict: keep its factory
            return t(value.default_factory, items)
        return t(items)
    return copy.deepcopy(value)


def seg_to_dict(self: Any) -> Dict[str, Any]:
    """``Seg.to_dict``: ``{"type", "data"}``; a ``seglist``'s children serialised recursively."""
    t = self.type
    if t == "seglist":
        return {"type": t, "data": [s.to_dict() for s in self.data]}
    return {"type": t, "data": self.data}


def seg_from_dict(cls: Type[_S], root: Type[Any], data: Dict[str, Any]) -> _S:
    """``Seg.from_dict``: lenient; a ``seglist``'s items become ``root`` instances."""
    t = data.get("type")
    d: Any = data.get("data")
    if t == "seglist":
        d = [seg_from_dict(root, root, s) for s in d]
    return cls(t, d)  # type: ignore[call-arg]


# FormatInfo and TemplateInfo follow the same rules in both families; each family
# subclasses these so that its classes stay distinct types (as in 0.6.8).


@dataclass
class FormatInfoRules:
    """Segment types a message contains / its sender accepts."""

    content_format: Optional[List[str]] = None
    accept_format: Optional[List[str]] = None

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {}
        v = self.content_format
        if v is not None:
            r["content_format"] = plain(v)
        v = self.accept_format
        if v is not None:
            r["accept_format"] = plain(v)
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Any:
        return cls(data.get("content_format"), data.get("accept_format"))


@dataclass
class TemplateInfoRules:
    """Prompt template selection (MaiBot); ``template_default`` defaults to True."""

    template_items: Optional[Dict[str, str]] = None
    template_name: Optional[Dict[str, str]] = None
    template_default: bool = True

    def to_dict(self) -> Dict[str, Any]:
        r: Dict[str, Any] = {}
        v: Any = self.template_items
        if v is not None:
            r["template_items"] = plain(v)
        v = self.template_name
        if v is not None:
            r["template_name"] = plain(v)
        v = self.template_default
        if v is not None:
            r["template_default"] = plain(v)
        return r

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Any:
        return cls(
            data.get("template_items"),
            data.get("template_name"),
            data.get("template_default", True),
        )
