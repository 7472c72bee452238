"""Revoked API keys that outlive the process: a small file of SHA-256 digests.

``[admin] revoked_file`` names it. One 64-hex-digit digest a line (the form
``key_sha256`` takes in the config; ``#`` starts a comment), appended to on each revoke
and read at start and on reload, so a key revoked through the admin plane stays refused
after a restart. In cluster mode the cluster's store keeps revocations too (every node
applies them when it starts, ``ClusterBackend.admin``); the file is then a local copy.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional, Set

from .key_config import is_sha256_hex

logger = logging.getLogger(__name__)


class RevokedFile:
    def __init__(self, path: Optional[str]) -> None:
        self.path = path

    def load(self) -> Set[bytes]:
        """The digests in the file (none when it is not configured or not there yet)."""
        if not self.path or not os.path.exists(self.path):
            return set()
        out: Set[bytes] = set()
        with open(self.path, encoding="utf-8") as handle:
            for number, raw in enumerate(handle, 1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                if is_sha256_hex(line):
                    out.add(bytes.fromhex(line))
                else:
                    logger.warning("%s:%d: not a SHA-256 digest, ignored", self.path, number)
        return out

    def add(self, digest: bytes, label: str) -> bool:
        """Append one revocation (flushed to disk); False when there is no file to keep it
        in or it cannot be written (logged)."""
        if not self.path:
            return False
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                handle.write(f"{digest.hex()}  # {label} revoked {stamp}\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            logger.error("could not keep the revocation of %s in %s: %s", label, self.path,
                         exc)
            return False
        return True
