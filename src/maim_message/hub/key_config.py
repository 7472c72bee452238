"""API keys from the config: ``[[keys]]`` tables (in the config file or a keys file), or a
``key=user,...`` spec (``MAIM_HUB_KEYS`` / ``--keys``).

A table gives the key itself (``key``), the name of an environment variable holding it
(``key_env``) or only its SHA-256 (``key_sha256``, hex), so the file need not hold
secrets. Every problem names the file and line it comes from.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .settings import KeyEntry
from .toml_source import Origins

KEY_FIELDS = ("key", "key_env", "key_sha256", "user", "platforms", "forward_to")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")

KeySpec = Tuple[str, str, Tuple[str, ...], Optional[str]]


def is_sha256_hex(value: Any) -> bool:
    return isinstance(value, str) and bool(_SHA256_HEX.match(value))


def parse_keys_spec(spec: str) -> List[KeySpec]:
    """``"k1=maibot,k2=napcat>maibot:qq|telegram"`` -> [(key, user, platforms, forward_to)].

    The last ``=`` of an item separates key and user; ``>`` after the user names the user
    this key's messages are forwarded to; ``:`` starts a ``|``-separated platform list
    (empty = any platform).
    """
    out: List[KeySpec] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, rest = item.rpartition("=")
        if not sep or not key.strip() or not rest.strip():
            raise ValueError(
                "each item must look like key=user, key=user>forward_to or "
                f"key=user:platform1|platform2 (item {len(out) + 1} does not)"
            )
        user, _, plats = rest.partition(":")
        user, _, forward = user.partition(">")
        platforms = tuple(p.strip() for p in plats.split("|") if p.strip())
        out.append((key.strip(), user.strip(), platforms, forward.strip() or None))
    return out


def keys_from_spec(where: str, spec: str, problems: List[str]) -> List[KeyEntry]:
    try:
        items = parse_keys_spec(spec)
    except ValueError as exc:
        problems.append(f"{where}: keys: {exc}")
        return []
    return [KeyEntry(k, u, p, where, f) for k, u, p, f in items]


def keys_from_tables(
    raw: Any, origins: Origins, env: Mapping[str, str], problems: List[str]
) -> List[KeyEntry]:
    """``[[keys]]`` tables (of one file) -> entries."""
    if not isinstance(raw, list):
        problems.append(f"{origins.where('keys')}: keys: must be an array of tables "
                        "([[keys]] with key = \"...\", user = \"...\")")
        return []
    entries: List[KeyEntry] = []
    for index, item in enumerate(raw):
        entry = _key_from_table(index, item, origins, env, problems)
        if entry is not None:
            entries.append(entry)
    return entries


def check_keys(entries: List[KeyEntry], problems: List[str]) -> None:
    """Problems that need every key at once: unknown forward_to users, duplicates."""
    users = {e.user for e in entries}
    for entry in entries:
        if entry.forward_to and entry.forward_to not in users:
            problems.append(f"{entry.source}: forward_to: no key maps to user "
                            f"'{entry.forward_to}' (known users: {', '.join(sorted(users))})")
    seen: Dict[bytes, str] = {}
    for entry in entries:
        digest = entry.digest
        if digest in seen:
            problems.append(f"{entry.source}: keys: {entry.label} is listed twice "
                            f"(also at {seen[digest]})")
        seen.setdefault(digest, entry.source)


def _key_from_table(
    index: int, item: Any, origins: Origins, env: Mapping[str, str], problems: List[str],
) -> Optional[KeyEntry]:
    base = shown = f"keys[{index}]"
    where = origins.where(base)
    if not isinstance(item, dict):
        problems.append(f"{where}: {shown}: must be a table with key and user")
        return None
    ok = True
    for name in item:
        if name not in KEY_FIELDS:
            problems.append(f"{origins.where(f'{base}.{name}')}: unknown key '{shown}.{name}' "
                            f"(known: {', '.join(KEY_FIELDS)})")
            ok = False
    given = [name for name in ("key", "key_env", "key_sha256") if item.get(name) is not None]
    if len(given) > 1:
        problems.append(f"{where}: {shown}: give one of key, key_env or key_sha256, "
                        f"not {' and '.join(given)}")
        return None
    key = item.get("key")
    digest_hex: Optional[str] = None
    if given == ["key_env"]:
        key_env = item["key_env"]
        if not isinstance(key_env, str) or not key_env:
            problems.append(f"{origins.where(base + '.key_env')}: {shown}.key_env: must be "
                            "the name of an environment variable")
            return None
        key = env.get(key_env)
        if not key:
            problems.append(f"{origins.where(base + '.key_env')}: {shown}.key_env: "
                            f"environment variable {key_env} is not set or empty")
            return None
    elif given == ["key_sha256"]:
        digest_hex = item["key_sha256"]
        if not is_sha256_hex(digest_hex):
            problems.append(f"{origins.where(base + '.key_sha256')}: {shown}.key_sha256: must "
                            "be 64 hex digits (python -m maim_message keygen --hash)")
            ok = False
        key = ""
    elif not isinstance(key, str) or not key.strip():
        problems.append(f"{origins.where(base + '.key')}: {shown}.key: must be a non-empty "
                        "string (or use key_env = \"VAR\" or key_sha256 = \"<hex>\")")
        ok = False
    user = item.get("user")
    if not isinstance(user, str) or not user.strip():
        problems.append(f"{origins.where(base + '.user')}: {shown}.user: must be a non-empty "
                        "string (the user id this key maps to)")
        ok = False
    platforms = item.get("platforms", [])
    if isinstance(platforms, str):
        platforms = [platforms]
    if not isinstance(platforms, list) or not all(
        isinstance(p, str) and p.strip() for p in platforms
    ):
        problems.append(f"{origins.where(base + '.platforms')}: {shown}.platforms: must be a "
                        "list of platform names (empty or missing: any platform)")
        ok = False
    forward_to = item.get("forward_to")
    if forward_to is not None and (not isinstance(forward_to, str) or not forward_to.strip()):
        problems.append(f"{origins.where(base + '.forward_to')}: {shown}.forward_to: must be "
                        "a user id (where this key's messages go)")
        ok = False
    if not ok:
        return None
    assert isinstance(key, str) and isinstance(user, str)
    return KeyEntry(key.strip(), user.strip(), tuple(p.strip() for p in platforms), where,
                    forward_to.strip() if forward_to else None,
                    digest_hex.lower() if digest_hex else None)
